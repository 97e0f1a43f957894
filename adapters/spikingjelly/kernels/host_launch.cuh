// The emulated launch (CPU build only): kernels.host_source() appends this file to a kernel file
// and then one EMULATED_ENTRY(name) line per kernel. Each entry exports two C functions for
// ctypes:
//   <name>_signature()  the kernel's parameter list as codes ("p2 i4 f4 ..."): p<n> a pointer
//                       to elements of n bytes, i<n> an integer, f<n> a floating-point scalar
//                       of n bytes; the launcher checks it against the arguments it packs.
//   <name>_grid(blocks, threads, argv)  runs the kernel for every block x thread of a 1-D grid,
//                       as a CUDA launch <<<blocks, threads>>> would, one thread at a time;
//                       argv[i] points to the value of argument i (as cuLaunchKernel takes it).
// The kernels share no memory between threads and never synchronise, so running the threads
// one after another gives what any order on the GPU gives.

#include <cstddef>
#include <string>
#include <type_traits>
#include <utility>

template <typename T> std::string emulated_code() {
    if constexpr (std::is_pointer_v<T>) {
        return "p" + std::to_string(sizeof(std::remove_pointer_t<T>));
    } else if constexpr (std::is_floating_point_v<T>) {
        return "f" + std::to_string(sizeof(T));
    } else {
        static_assert(std::is_integral_v<T>, "kernel parameters are pointers, integers or floats");
        return "i" + std::to_string(sizeof(T));
    }
}

template <typename... A> const char* emulated_signature(void (*)(A...)) {
    static const std::string text = [] {
        std::string codes;
        ((codes += (codes.empty() ? "" : " ") + emulated_code<std::remove_cv_t<A>>()), ...);
        return codes;
    }();
    return text.c_str();
}

template <typename... A, std::size_t... I>
void emulated_thread(void (*kernel)(A...), void* const* argv, std::index_sequence<I...>) {
    kernel(*static_cast<const std::remove_cv_t<A>*>(argv[I])...);
}

template <typename... A>
void emulated_grid(void (*kernel)(A...), const unsigned int blocks, const unsigned int threads,
                   void* const* argv) {
    blockDim = {threads, 1, 1};
    for (unsigned int b = 0; b < blocks; ++b) {
        for (unsigned int t = 0; t < threads; ++t) {
            blockIdx = {b, 0, 0};
            threadIdx = {t, 0, 0};
            emulated_thread(kernel, argv, std::index_sequence_for<A...>{});
        }
    }
}

#define EMULATED_ENTRY(NAME)                                                                      \
extern "C" const char* NAME##_signature() { return emulated_signature(NAME); }                   \
extern "C" void NAME##_grid(const unsigned int blocks, const unsigned int threads,              \
                            void* const* argv)                                                    \
{ emulated_grid(NAME, blocks, threads, argv); }

// The float16 conversions of common.cuh, n values at a time (the host twin's own test).
extern "C" void emulated_half_to_float(const half_bits* in, float* out, const long long n) {
    for (long long i = 0; i < n; ++i) out[i] = load(in[i]);
}
extern "C" void emulated_float_to_half(const float* in, half_bits* out, const long long n) {
    for (long long i = 0; i < n; ++i) out[i] = Storage<half_bits>::store(in[i]);
}
