// Multi-step IC-rate neurons (integrate-and-fire, reset by subtraction): one thread per neuron,
// looping over the T time steps of a time-first [T, N] block.
//
// The forward mirrors snn_encodings.functional.icrate.icrate_step operation by operation, with
// the result of every operation rounded to the storage type, as torch's elementwise kernels do:
//   h = v + x;  s = [h - theta >= 0];  v = h - theta * s
// so spikes and membranes equal the torch reference exactly for float32/float64 and float16
// (float16 values are computed in float32 and rounded after every operation). The source
// must be compiled without FMA contraction (-fmad=false) and without fast-math.
//
// The backward is surrogate-gradient backpropagation through time with the reset detached
// (as in the core step), the autograd of icrate_step operation by operation, each sum rounded
// to the storage type as autograd accumulates in it:
//   dL/dv_t = g_v[t] + dL/dh_{t+1},   dL/dh_t = dL/dv_t + sg(g_s[t], h_t - theta),
//   dL/dx_t = dL/dh_t,   dL/dv_init = dL/dh_0,
// with sg = surrogate_backward (common.cuh): SpikingJelly's Sigmoid (kind 0) or ATan (kind 1)
// backward with parameter alpha; kind 2 (no surrogate) lets only the membrane path carry
// gradient. h_seq (pre-reset membranes) is written only when store_h != 0; otherwise the
// pointer is never touched.
//
// Signed neurons (ICRate(signed=True), the signed branch of icrate_step) also take a spike
// back; their state adds the net spike count n (count_init, count_last):
//   h = v + x;  s = [h - theta >= 0] - [h < 0 and n > 0];  v = h - theta * s;  n = n + s
// with the same rounding (the count holds small integers, exact in every storage type).
// Their backward adds the take-back spike's surrogate term, which the core step applies to -h
// where n > 0 (n before the step), to the membrane path and the firing term, in the order in
// which autograd adds the three (membrane path, then take-back, then firing; another order
// changes the last bit of float16/32/64 gradients):
//   dL/dv_t = g_v[t] + dL/dh_{t+1},   g_back = -g_s[t] * [n_t > 0],
//   dL/dh_t = (dL/dv_t - sg(g_back, -h_t)) + sg(g_s[t], h_t - theta).
// The mask [n_t > 0] needs the count before each step. The backward rebuilds it from the final
// count and the spikes, walking back n_t = n_{t+1} - s_t, instead of the forward saving a
// [T, N] count: the spikes are the forward's output, which autograd keeps anyway, so the signed
// backward needs no more memory than the unsigned one (h_seq and an [N] count). Every n_t is
// an integer reached from n_{t+1} by adding -1, 0 or 1, so the walk is exact wherever the
// forward's count additions were (|n| <= 2048 in float16, 2^24 in float32).
//
// The storage helpers come from common.cuh, which kernels.source() inlines, so the source
// compiles with bare NVRTC (no headers).

#include "common.cuh"

template <typename S>
__device__ void icrate_forward(
    const S* __restrict__ x_seq, const S* __restrict__ v_init,
    S* __restrict__ spike_seq, S* __restrict__ v_seq, S* __restrict__ h_seq, const int store_h,
    const typename Storage<S>::compute theta, const int steps, const long long n)
{
    typedef typename Storage<S>::compute C;
    const long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n) return;
    C v = load(v_init[i]);
    for (int t = 0; t < steps; ++t) {
        const long long k = (long long)t * n + i;
        const C h = Storage<S>::round(v + load(x_seq[k]));
        const C gap = Storage<S>::round(h - theta);
        const C s = gap >= (C)0 ? (C)1 : (C)0;
        const C drop = Storage<S>::round(theta * s);
        v = Storage<S>::round(h - drop);
        spike_seq[k] = Storage<S>::store(s);
        v_seq[k] = Storage<S>::store(v);
        if (store_h) h_seq[k] = Storage<S>::store(h);
    }
}

template <typename S>
__device__ void icrate_backward(
    const S* __restrict__ grad_spike_seq, const S* __restrict__ grad_v_seq,
    const S* __restrict__ h_seq, S* __restrict__ grad_x_seq, S* __restrict__ grad_v_init,
    const typename Storage<S>::compute theta, const int kind, const double alpha,
    const int steps, const long long n)
{
    typedef typename Storage<S>::compute C;
    const long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n) return;
    C grad_h = (C)0;
    for (int t = steps - 1; t >= 0; --t) {
        const long long k = (long long)t * n + i;
        const C gap = Storage<S>::round(load(h_seq[k]) - theta);
        const C grad_v = Storage<S>::round(load(grad_v_seq[k]) + grad_h);
        grad_h = Storage<S>::round(
            grad_v + surrogate_backward<S>(load(grad_spike_seq[k]), gap, kind, alpha));
        grad_x_seq[k] = Storage<S>::store(grad_h);
    }
    grad_v_init[i] = Storage<S>::store(grad_h);
}

template <typename S>
__device__ void icrate_signed_forward(
    const S* __restrict__ x_seq, const S* __restrict__ v_init, const S* __restrict__ count_init,
    S* __restrict__ spike_seq, S* __restrict__ v_seq, S* __restrict__ h_seq,
    S* __restrict__ count_last, const int store_h, const typename Storage<S>::compute theta,
    const int steps, const long long n)
{
    typedef typename Storage<S>::compute C;
    const long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n) return;
    C v = load(v_init[i]);
    C count = load(count_init[i]);
    for (int t = 0; t < steps; ++t) {
        const long long k = (long long)t * n + i;
        const C h = Storage<S>::round(v + load(x_seq[k]));
        const C gap = Storage<S>::round(h - theta);
        const C fire = gap >= (C)0 ? (C)1 : (C)0;
        const C back = (h < (C)0 && count > (C)0) ? (C)1 : (C)0;
        const C s = Storage<S>::round(fire - back);
        const C drop = Storage<S>::round(theta * s);
        v = Storage<S>::round(h - drop);
        count = Storage<S>::round(count + s);
        spike_seq[k] = Storage<S>::store(s);
        v_seq[k] = Storage<S>::store(v);
        if (store_h) h_seq[k] = Storage<S>::store(h);
    }
    count_last[i] = Storage<S>::store(count);
}

template <typename S>
__device__ void icrate_signed_backward(
    const S* __restrict__ grad_spike_seq, const S* __restrict__ grad_v_seq,
    const S* __restrict__ h_seq, const S* __restrict__ spike_seq,
    const S* __restrict__ count_last, S* __restrict__ grad_x_seq, S* __restrict__ grad_v_init,
    const typename Storage<S>::compute theta, const int kind, const double alpha,
    const int steps, const long long n)
{
    typedef typename Storage<S>::compute C;
    const long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n) return;
    C grad_h = (C)0;
    C count = load(count_last[i]);
    for (int t = steps - 1; t >= 0; --t) {
        const long long k = (long long)t * n + i;
        count = Storage<S>::round(count - load(spike_seq[k]));
        const C h = load(h_seq[k]);
        const C gap = Storage<S>::round(h - theta);
        const C grad_s = load(grad_spike_seq[k]);
        const C grad_v = Storage<S>::round(load(grad_v_seq[k]) + grad_h);
        const C grad_back = Storage<S>::round(-grad_s * (count > (C)0 ? (C)1 : (C)0));
        const C taken = Storage<S>::round(
            grad_v - surrogate_backward<S>(grad_back, -h, kind, alpha));
        grad_h = Storage<S>::round(
            taken + surrogate_backward<S>(grad_s, gap, kind, alpha));
        grad_x_seq[k] = Storage<S>::store(grad_h);
    }
    grad_v_init[i] = Storage<S>::store(grad_h);
}

#define ICRATE_KERNELS(SUFFIX, S, C)                                                              \
extern "C" __global__ void icrate_forward_##SUFFIX(                                               \
    const S* x_seq, const S* v_init, S* spike_seq, S* v_seq, S* h_seq, const int store_h,         \
    const C theta, const int steps, const long long n)                                            \
{ icrate_forward<S>(x_seq, v_init, spike_seq, v_seq, h_seq, store_h, theta, steps, n); }          \
extern "C" __global__ void icrate_backward_##SUFFIX(                                              \
    const S* grad_spike_seq, const S* grad_v_seq, const S* h_seq, S* grad_x_seq,                 \
    S* grad_v_init, const C theta, const int kind, const double alpha, const int steps,          \
    const long long n)                                                                            \
{ icrate_backward<S>(grad_spike_seq, grad_v_seq, h_seq, grad_x_seq, grad_v_init, theta, kind,    \
                     alpha, steps, n); }                                                          \
extern "C" __global__ void icrate_signed_forward_##SUFFIX(                                        \
    const S* x_seq, const S* v_init, const S* count_init, S* spike_seq, S* v_seq, S* h_seq,       \
    S* count_last, const int store_h, const C theta, const int steps, const long long n)          \
{ icrate_signed_forward<S>(x_seq, v_init, count_init, spike_seq, v_seq, h_seq, count_last,        \
                           store_h, theta, steps, n); }                                           \
extern "C" __global__ void icrate_signed_backward_##SUFFIX(                                       \
    const S* grad_spike_seq, const S* grad_v_seq, const S* h_seq, const S* spike_seq,             \
    const S* count_last, S* grad_x_seq, S* grad_v_init, const C theta, const int kind,            \
    const double alpha, const int steps, const long long n)                                       \
{ icrate_signed_backward<S>(grad_spike_seq, grad_v_seq, h_seq, spike_seq, count_last,             \
                            grad_x_seq, grad_v_init, theta, kind, alpha, steps, n); }

ICRATE_KERNELS(f16, half_bits, float)
ICRATE_KERNELS(f32, float, float)
ICRATE_KERNELS(f64, double, double)
