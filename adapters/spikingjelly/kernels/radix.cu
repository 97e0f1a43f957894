// Multi-step radix neurons (base-r digits, both modes of Radix.mode): one thread per neuron,
// looping over the T time steps of a time-first [T, N] block.
//
// The forward mirrors snn_encodings.functional.radix.radix_step operation by operation, with
// the result of every operation rounded to the storage type (common.cuh). With the step
// counter k (int64, as in RadixState), the window length L = digits * m and m = r - 1
// sub-steps per digit: p = k mod L (torch's remainder: sign of the divisor), q = p mod m,
// j = p / m, and then
//   exact (paper == 0):  a = (q == 0 ? a * r : a) + x;   thr = thresholds[j]
//                        s = [(v - thr) / thr >= 0];   v = v - thr * s
//                        (v, a) = (a, 0) if p == L - 1
//   paper (paper != 0):  v = v + x;   d = remainder(floor(v), r)
//                        s = [min(v - 1, d - fire_level) >= 0];   v = v - s
//                        v = v * leak if q == m - 1
//   k = k + 1
// thresholds is the table of radix_digit_thresholds (r^(T-1-j), already in the storage type),
// fire_level = normalised_threshold * r and leak = leak_factor, as the core computes them; the
// scalars r, fire_level and leak enter each operation in the compute type as torch's CUDA
// kernels take Python scalars, except the remainder's divisor, which torch first rounds to the
// storage type. s = [min(a, b) >= 0] is evaluated as [a >= 0] and [b >= 0] (the same, NaN
// included). Spikes, membranes and the final state therefore equal the torch reference exactly
// in every dtype. Whether the radix arithmetic itself is exact depends on the dtype, as on the
// torch path: float64 (what conversion uses) holds every sum of grid-valued currents; float16
// holds integers exactly only up to 2048 and overflows above 65504 (a threshold r^(T-1) beyond
// it is inf, and the torch step then yields the same NaN membranes as the kernel).
// The source must be compiled without FMA contraction (-fmad=false) and without fast-math.
//
// The backward is surrogate-gradient backpropagation through time, the autograd of radix_step
// operation by operation (spikes detached in the membrane update; sg = surrogate_backward of
// common.cuh, kind 2 = none), each result rounded to the storage type as autograd computes it:
//   exact: dL/dv_n = [p < L-1] G_v + sg(g_s, u) / thr   with u = (v - thr) / thr (summed
//          into the previous step's G_v in autograd's order: g_v first, then these two),
//          dL/dx_n = [p = L-1] G_v + [p < L-1] G_a,   dL/da_n = dL/dx_n * (q == 0 ? r : 1)
//   paper: dL/dv_n = (q == m-1 ? G_v * leak : G_v) + min'(sg(g_s, min(a, b)), a, b),
//          dL/dx_n = dL/dv_n, with min' torch.minimum's backward for its first argument:
//          the gradient, half of it or 0 as v - 1 is below, equal to or above d - fire_level;
//          the accumulator passes through.
// G_v = g_v[n] + dL/dv_{n+1} and G_a = dL/da_{n+1} are the gradients reaching the step's
// outputs. The backward recomputes the forward's values from x_seq, v_init, v_seq and k_init
// (bit for bit, the same code).

#include "common.cuh"

__device__ __forceinline__ long long window_position(const long long k, const long long window) {
    const long long p = k % window;
    return p < 0 ? p + window : p;
}

__device__ __forceinline__ float floor_c(const float v) { return floorf(v); }
__device__ __forceinline__ double floor_c(const double v) { return floor(v); }

// fmod is exact in any precision (the result is representable in the arguments' type), so
// float arguments go through the double version: libdevice's fmodf is built on FMA, fmod is
// not, and the forward PTX then holds no FMA at all (the check that -fmad=false took effect).
template <typename C> __device__ __forceinline__ C fmod_c(const C a, const C b) {
    return (C)fmod((double)a, (double)b);
}

// torch.minimum's forward (NaN propagates) and its backward for a: where(a == b, g / 2, g),
// then 0 where a > b.
template <typename C> __device__ __forceinline__ C minimum_c(const C a, const C b) {
    return a != a ? a : (b != b ? b : (a < b ? a : b));
}
template <typename S>
__device__ __forceinline__ typename Storage<S>::compute minimum_backward(
    const typename Storage<S>::compute g, const typename Storage<S>::compute a,
    const typename Storage<S>::compute b)
{
    typedef typename Storage<S>::compute C;
    return a > b ? (C)0 : (a == b ? Storage<S>::round(g / (C)2) : g);
}

// Paper mode: the two arguments of the spike's minimum, a = v - 1 and b = d - fire_level.
template <typename S>
__device__ __forceinline__ void paper_drives(
    const typename Storage<S>::compute v, const typename Storage<S>::compute divisor,
    const typename Storage<S>::compute fire_level, typename Storage<S>::compute* a,
    typename Storage<S>::compute* b)
{
    typedef typename Storage<S>::compute C;
    C digit = fmod_c(floor_c(v), divisor);
    if (digit < (C)0) digit = Storage<S>::round(digit + divisor);
    *a = Storage<S>::round(v - (C)1);
    *b = Storage<S>::round(digit - fire_level);
}

// Exact mode: the spike's argument u = (v - thr) / thr.
template <typename S>
__device__ __forceinline__ typename Storage<S>::compute exact_drive(
    const typename Storage<S>::compute v, const typename Storage<S>::compute thr)
{
    return Storage<S>::round(Storage<S>::round(v - thr) / thr);
}

template <typename S>
__device__ void radix_forward(
    const S* __restrict__ x_seq, const S* __restrict__ v_init, const S* __restrict__ acc_init,
    const long long* __restrict__ k_init, const S* __restrict__ thresholds,
    S* __restrict__ spike_seq, S* __restrict__ v_seq, S* __restrict__ acc_last,
    long long* __restrict__ k_last, const int paper, const long long base,
    const long long substeps, const long long window, const typename Storage<S>::compute leak,
    const typename Storage<S>::compute fire_level, const int steps, const long long n)
{
    typedef typename Storage<S>::compute C;
    const long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n) return;
    const C radix = (C)base;
    const C divisor = Storage<S>::round((C)base);
    C v = load(v_init[i]);
    C acc = load(acc_init[i]);
    long long k = k_init[i];
    for (int t = 0; t < steps; ++t) {
        const long long at = (long long)t * n + i;
        const long long p = window_position(k, window);
        const long long q = p % substeps;
        bool s;
        if (paper) {
            v = Storage<S>::round(v + load(x_seq[at]));
            C a, b;
            paper_drives<S>(v, divisor, fire_level, &a, &b);
            s = a >= (C)0 && b >= (C)0;
            v = Storage<S>::round(v - (s ? (C)1 : (C)0));
            if (q == substeps - 1) v = Storage<S>::round(v * leak);
        } else {
            const C thr = load(thresholds[p / substeps]);
            acc = Storage<S>::round((q == 0 ? Storage<S>::round(acc * radix) : acc)
                                    + load(x_seq[at]));
            s = exact_drive<S>(v, thr) >= (C)0;
            v = Storage<S>::round(v - Storage<S>::round(thr * (s ? (C)1 : (C)0)));
            if (p == window - 1) {
                v = acc;
                acc = (C)0;
            }
        }
        k = k + 1;
        spike_seq[at] = Storage<S>::store(s ? (C)1 : (C)0);
        v_seq[at] = Storage<S>::store(v);
    }
    acc_last[i] = Storage<S>::store(acc);
    k_last[i] = k;
}

template <typename S>
__device__ void radix_backward(
    const S* __restrict__ grad_spike_seq, const S* __restrict__ grad_v_seq,
    const S* __restrict__ grad_acc_last, const S* __restrict__ x_seq,
    const S* __restrict__ v_init, const S* __restrict__ v_seq,
    const long long* __restrict__ k_init, const S* __restrict__ thresholds,
    S* __restrict__ grad_x_seq, S* __restrict__ grad_v_init, S* __restrict__ grad_acc_init,
    const int paper, const long long base, const long long substeps, const long long window,
    const typename Storage<S>::compute leak, const typename Storage<S>::compute fire_level,
    const int kind, const double alpha, const int steps, const long long n)
{
    typedef typename Storage<S>::compute C;
    const long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n) return;
    const C radix = (C)base;
    const C divisor = Storage<S>::round((C)base);
    // The gradient reaching v from the next step: through its membrane update (grad_v; paper
    // mode: all of it) and, in exact mode, through its spike drive u (grad_drive). Autograd
    // adds the recorded membrane's gradient first, then the update's, then the drive's.
    C grad_v = (C)0;
    C grad_drive = (C)0;
    C grad_acc = load(grad_acc_last[i]);
    for (int t = steps - 1; t >= 0; --t) {
        const long long at = (long long)t * n + i;
        const long long p = window_position(k_init[i] + t, window);
        const long long q = p % substeps;
        const C v_before = t == 0 ? load(v_init[i]) : load(v_seq[at - n]);
        const C grad_s = load(grad_spike_seq[at]);
        grad_v = Storage<S>::round(Storage<S>::round(load(grad_v_seq[at]) + grad_v) + grad_drive);
        if (paper) {
            const C v = Storage<S>::round(v_before + load(x_seq[at]));
            C a, b;
            paper_drives<S>(v, divisor, fire_level, &a, &b);
            const C grad_leaked = q == substeps - 1 ? Storage<S>::round(grad_v * leak) : grad_v;
            const C grad_drive = surrogate_backward<S>(grad_s, minimum_c(a, b), kind, alpha);
            grad_v = Storage<S>::round(grad_leaked + minimum_backward<S>(grad_drive, a, b));
            grad_x_seq[at] = Storage<S>::store(grad_v);
        } else {
            const C thr = load(thresholds[p / substeps]);
            const C u = exact_drive<S>(v_before, thr);
            const bool window_end = p == window - 1;
            const C grad_new_acc = window_end ? grad_v : grad_acc;
            const C grad_kept_v = window_end ? (C)0 : grad_v;
            const C grad_u = surrogate_backward<S>(grad_s, u, kind, alpha);
            grad_v = grad_kept_v;
            grad_drive = Storage<S>::round(grad_u / thr);
            grad_x_seq[at] = Storage<S>::store(grad_new_acc);
            grad_acc = q == 0 ? Storage<S>::round(grad_new_acc * radix) : grad_new_acc;
        }
    }
    grad_v_init[i] = Storage<S>::store(Storage<S>::round(grad_v + grad_drive));
    grad_acc_init[i] = Storage<S>::store(grad_acc);
}

#define RADIX_KERNELS(SUFFIX, S, C)                                                               \
extern "C" __global__ void radix_forward_##SUFFIX(                                                \
    const S* x_seq, const S* v_init, const S* acc_init, const long long* k_init,                  \
    const S* thresholds, S* spike_seq, S* v_seq, S* acc_last, long long* k_last, const int paper, \
    const long long base, const long long substeps, const long long window, const C leak,         \
    const C fire_level, const int steps, const long long n)                                       \
{ radix_forward<S>(x_seq, v_init, acc_init, k_init, thresholds, spike_seq, v_seq, acc_last,      \
                   k_last, paper, base, substeps, window, leak, fire_level, steps, n); }          \
extern "C" __global__ void radix_backward_##SUFFIX(                                               \
    const S* grad_spike_seq, const S* grad_v_seq, const S* grad_acc_last, const S* x_seq,         \
    const S* v_init, const S* v_seq, const long long* k_init, const S* thresholds,                \
    S* grad_x_seq, S* grad_v_init, S* grad_acc_init, const int paper, const long long base,       \
    const long long substeps, const long long window, const C leak, const C fire_level,           \
    const int kind, const double alpha, const int steps, const long long n)                       \
{ radix_backward<S>(grad_spike_seq, grad_v_seq, grad_acc_last, x_seq, v_init, v_seq, k_init,     \
                    thresholds, grad_x_seq, grad_v_init, grad_acc_init, paper, base, substeps,    \
                    window, leak, fire_level, kind, alpha, steps, n); }

RADIX_KERNELS(f16, half_bits, float)
RADIX_KERNELS(f32, float, float)
RADIX_KERNELS(f64, double, double)
