// Shared by the kernel files (inlined by kernels.source() where a file says
// #include "common.cuh"): storage types and rounding, and the surrogate derivatives.
//
// Every operation's result is rounded to the storage type, as torch's elementwise kernels do:
// float32/float64 compute in their own type; float16 is handled as raw 16-bit values with PTX
// conversions (no headers needed, so the sources compile with bare NVRTC), computed in float32
// and rounded after every operation.

typedef unsigned short half_bits;

__device__ __forceinline__ float load(const float v) { return v; }
__device__ __forceinline__ double load(const double v) { return v; }
__device__ __forceinline__ float load(const half_bits v) {
    float f;
    asm("cvt.f32.f16 %0, %1;" : "=f"(f) : "h"(v));
    return f;
}

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
    static __device__ __forceinline__ half_bits store(const float v) {
        half_bits h;
        asm("cvt.rn.f16.f32 %0, %1;" : "=h"(h) : "f"(v));
        return h;
    }
    static __device__ __forceinline__ float round(const float v) { return load(store(v)); }
};

// Derivative of SpikingJelly's surrogate functions at x (the spike's argument), computed in the
// compute type: kind 0 = surrogate.Sigmoid, 1 = surrogate.ATan (parameter alpha), 2 = none (0).
__device__ __forceinline__ float surrogate_grad(const float x, const int kind, const float alpha) {
    if (kind == 2) return 0.0f;
    if (kind == 0) {
        const float sg = 1.0f / (1.0f + expf(-alpha * x));
        return (1.0f - sg) * sg * alpha;
    }
    const float a = 0.5f * alpha;
    const float ax = 3.14159265358979323846f * a * x;
    return a / (1.0f + ax * ax);
}

__device__ __forceinline__ double surrogate_grad(const double x, const int kind, const double alpha) {
    if (kind == 2) return 0.0;
    if (kind == 0) {
        const double sg = 1.0 / (1.0 + exp(-alpha * x));
        return (1.0 - sg) * sg * alpha;
    }
    const double a = 0.5 * alpha;
    const double ax = 3.14159265358979323846 * a * x;
    return a / (1.0 + ax * ax);
}
