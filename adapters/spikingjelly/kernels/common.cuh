// Shared by the kernel files (inlined by kernels.source() where a file says
// #include "common.cuh"): the target layer, storage types and rounding, and the surrogate
// derivatives.
//
// Every operation's result is rounded to the storage type, as torch's elementwise kernels do:
// float32/float64 compute in their own type; float16 is handled as raw 16-bit values, computed
// in float32 and rounded after every operation.
//
// The kernel files compile unchanged for two targets; only the first section below differs:
// - CUDA (NVRTC, __CUDACC_RTC__ / nvcc, __CUDACC__): float16 conversions in PTX, no headers, so
//   the sources compile with bare NVRTC.
// - CPU (a C++ compiler, for the emulated launch of kernels.EMULATED): the CUDA keywords become
//   plain C++, blockIdx/blockDim/threadIdx are thread-local variables that the grid loop of
//   host_launch.cuh sets for every block x thread, and the float16 conversions are a bit-exact
//   host twin of the PTX ones (round to nearest even; a test compares them with torch's on every
//   float16 and on the rounding boundaries between them).

typedef unsigned short half_bits;

#if defined(__CUDACC__) || defined(__CUDACC_RTC__)

__device__ __forceinline__ float half_to_float(const half_bits v) {
    float f;
    asm("cvt.f32.f16 %0, %1;" : "=f"(f) : "h"(v));
    return f;
}

__device__ __forceinline__ half_bits float_to_half(const float v) {
    half_bits h;
    asm("cvt.rn.f16.f32 %0, %1;" : "=h"(h) : "f"(v));
    return h;
}

#else

#include <math.h>
#include <string.h>

#define __global__
#define __device__
#define __forceinline__ inline

struct EmulatedDim3 {
    unsigned int x, y, z;
};
static thread_local EmulatedDim3 blockIdx, blockDim, threadIdx;

// float16 -> float32 is exact: rebias the exponent; subnormals are m * 2^-24.
inline float half_to_float(const half_bits v) {
    const unsigned int sign = (unsigned int)(v & 0x8000u) << 16;
    const unsigned int exponent = (v >> 10) & 0x1fu;
    const unsigned int mantissa = v & 0x3ffu;
    if (exponent == 0) {
        const float magnitude = (float)mantissa * 5.9604644775390625e-8f;
        return sign ? -magnitude : magnitude;
    }
    const unsigned int biased = exponent == 0x1fu ? 0xffu : exponent + 112u;
    const unsigned int bits = sign | (biased << 23) | (mantissa << 13);
    float f;
    memcpy(&f, &bits, sizeof f);
    return f;
}

// float32 -> float16, round to nearest even (cvt.rn): overflow to inf from 65520 on, NaN to the
// canonical NaN 0x7fff as PTX gives it, subnormals rounded on the 2^-24 grid.
inline half_bits float_to_half(const float v) {
    unsigned int bits;
    memcpy(&bits, &v, sizeof bits);
    const unsigned int sign = (bits >> 16) & 0x8000u;
    const unsigned int magnitude = bits & 0x7fffffffu;
    if (magnitude > 0x7f800000u) return (half_bits)0x7fffu;
    if (magnitude >= 0x477ff000u) return (half_bits)(sign | 0x7c00u);
    if (magnitude < 0x38800000u) {
        // |v| * 2^24 < 2^10 is exact; adding and removing 2^23 rounds it to an integer (even
        // on ties) in the default rounding mode.
        const float scaled = fabsf(v) * 16777216.0f;
        const float rounded = (scaled + 8388608.0f) - 8388608.0f;
        return (half_bits)(sign | (unsigned int)rounded);
    }
    unsigned int half = ((magnitude >> 23) - 112u) << 10 | ((magnitude >> 13) & 0x3ffu);
    const unsigned int rest = magnitude & 0x1fffu;
    if (rest > 0x1000u || (rest == 0x1000u && (half & 1u))) half += 1u;
    return (half_bits)(sign | half);
}

#endif

__device__ __forceinline__ float load(const float v) { return v; }
__device__ __forceinline__ double load(const double v) { return v; }
__device__ __forceinline__ float load(const half_bits v) { return half_to_float(v); }

template <typename S> struct Storage;
template <> struct Storage<float> {
    typedef float compute;
    static __device__ __forceinline__ float store(const float v) { return v; }
    static __device__ __forceinline__ float round(const float v) { return v; }
};
template <> struct Storage<double> {
    typedef double compute;
    static __device__ __forceinline__ double store(const double v) { return v; }
    static __device__ __forceinline__ double round(const double v) { return v; }
};
template <> struct Storage<half_bits> {
    typedef float compute;
    static __device__ __forceinline__ half_bits store(const float v) { return float_to_half(v); }
    static __device__ __forceinline__ float round(const float v) { return load(store(v)); }
};

// sigmoid in the compute type, as torch's sigmoid kernel writes it: 1 / (1 + exp(-x)).
__device__ __forceinline__ float sigmoid_c(const float x) { return 1.0f / (1.0f + expf(-x)); }
__device__ __forceinline__ double sigmoid_c(const double x) { return 1.0 / (1.0 + exp(-x)); }

// The gradient that SpikingJelly's surrogate backward gives its argument x for the incoming
// gradient g, operation by operation as surrogate.py computes it, each result rounded to the
// storage type S (the Python scalars enter in the compute type, as torch takes them):
//   kind 0, surrogate.Sigmoid:  s = sigmoid(x * alpha);  ((g * (1 - s)) * s) * alpha
//   kind 1, surrogate.ATan:     a = alpha / 2;  w = (pi * a) * x;  (1 / (w * w + 1)) * a * g
//                               (torch evaluates the scalar a / tensor as reciprocal * a)
//   kind 2, no surrogate: the spike passes no gradient (0).
// alpha is a double, as the Python float; pi * a is formed in double, as Python forms it.
template <typename S>
__device__ __forceinline__ typename Storage<S>::compute surrogate_backward(
    const typename Storage<S>::compute g, const typename Storage<S>::compute x, const int kind,
    const double alpha)
{
    typedef typename Storage<S>::compute C;
    if (kind == 2) return (C)0;
    if (kind == 0) {
        const C s = Storage<S>::round(sigmoid_c(Storage<S>::round(x * (C)alpha)));
        const C kept = Storage<S>::round(g * Storage<S>::round((C)1 - s));
        return Storage<S>::round(Storage<S>::round(kept * s) * (C)alpha);
    }
    const double a = alpha / 2;
    const C w = Storage<S>::round((C)(3.14159265358979323846 * a) * x);
    const C denominator = Storage<S>::round(Storage<S>::round(w * w) + (C)1);
    const C slope = Storage<S>::round(Storage<S>::round((C)1 / denominator) * (C)a);
    return Storage<S>::round(slope * g);
}
