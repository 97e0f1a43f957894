// Shared by the kernel files (inlined by kernels.source() where a file says
// #include "common.cuh"): storage types and rounding.
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
