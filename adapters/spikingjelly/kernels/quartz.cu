// Multi-step Quartz neurons (time-to-first-spike, one spike per window): one thread per neuron,
// looping over the T time steps of a time-first [T, N] block. Forward only (inference).
//
// The forward mirrors snn_encodings.functional.quartz.quartz_step operation by operation, with
// the result of every operation rounded to the storage type (common.cuh):
//   i = (t == read_step) ? 1 : i + x;   v = v + i;   s = [v - theta >= 0]
//   s = 0 if t < first_fire_step;   s = 1 if rectify and t == rectify_step;   s = 0 if fired
//   fired = fired or s;   (v, i) = (0, 0) if fired;   t = t + 1
// so spikes, membranes and the final state equal the torch reference exactly. first_fire_step
// is Quartz.first_fire_step: the readout step 2K in exact mode (no spike during the encode
// phase), 0 in paper mode (no gate: counters start at 0 and only grow). The step counter t is
// int64 as in QuartzState; the has-fired flag travels as uint8 (the bool as a byte).
// The source must be compiled without FMA contraction (-fmad=false) and without fast-math.

#include "common.cuh"

template <typename S>
__device__ void quartz_forward(
    const S* __restrict__ x_seq, const S* __restrict__ v_init, const S* __restrict__ i_init,
    const long long* __restrict__ t_init, const unsigned char* __restrict__ fired_init,
    S* __restrict__ spike_seq, S* __restrict__ v_seq, S* __restrict__ i_last,
    long long* __restrict__ t_last, unsigned char* __restrict__ fired_last,
    const typename Storage<S>::compute theta, const long long read_step,
    const long long first_fire_step, const long long rectify_step, const int rectify,
    const int steps, const long long n)
{
    typedef typename Storage<S>::compute C;
    const long long k0 = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (k0 >= n) return;
    C v = load(v_init[k0]);
    C i = load(i_init[k0]);
    long long t = t_init[k0];
    bool fired = fired_init[k0] != 0;
    for (int step = 0; step < steps; ++step) {
        const long long k = (long long)step * n + k0;
        i = (t == read_step) ? (C)1 : Storage<S>::round(i + load(x_seq[k]));
        v = Storage<S>::round(v + i);
        const C gap = Storage<S>::round(v - theta);
        bool s = gap >= (C)0;
        if (t < first_fire_step) s = false;
        if (rectify && t == rectify_step) s = true;
        if (fired) s = false;
        fired = fired || s;
        if (fired) {
            v = (C)0;
            i = (C)0;
        }
        t = t + 1;
        spike_seq[k] = Storage<S>::store(s ? (C)1 : (C)0);
        v_seq[k] = Storage<S>::store(v);
    }
    i_last[k0] = Storage<S>::store(i);
    t_last[k0] = t;
    fired_last[k0] = fired ? 1 : 0;
}

#define QUARTZ_KERNELS(SUFFIX, S, C)                                                              \
extern "C" __global__ void quartz_forward_##SUFFIX(                                               \
    const S* x_seq, const S* v_init, const S* i_init, const long long* t_init,                    \
    const unsigned char* fired_init, S* spike_seq, S* v_seq, S* i_last, long long* t_last,        \
    unsigned char* fired_last, const C theta, const long long read_step,                          \
    const long long first_fire_step, const long long rectify_step, const int rectify,             \
    const int steps, const long long n)                                                           \
{ quartz_forward<S>(x_seq, v_init, i_init, t_init, fired_init, spike_seq, v_seq, i_last, t_last, \
                    fired_last, theta, read_step, first_fire_step, rectify_step, rectify, steps,  \
                    n); }

QUARTZ_KERNELS(f16, half_bits, float)
QUARTZ_KERNELS(f32, float, float)
QUARTZ_KERNELS(f64, double, double)
