// shim.h: compile CUDA C kernels as C++ and run them on the CPU (x86-64, g++ >= 10, C++20).
//
// The executor (executor.py) builds one shared library per .cu text: this header, then the source,
// then CUDA_CPU_EXPORT(kernel) for every __global__ function. Execution model:
//   * blocks run one after another on the calling thread;
//   * a block's threads are fibres (own stack, cooperative): each runs until it returns or reaches
//     __syncthreads(); when every live thread waits (returned threads count as arrived, as on
//     Volta and later) they are all released. The order of the threads between barriers, and of
//     the blocks, is the schedule: forward, reverse or seeded random. This is one legal
//     interleaving: a race-free kernel gives the GPU's result, a racy one one of the results a GPU
//     could give;
//   * atomics are plain read-modify-writes (only one fibre runs at a time, and fibres switch only
//     at barriers), in schedule order;
//   * __shared__ variables are statics placed in the section "cuda_cpu_shared"; the launcher fills
//     that section and the dynamic shared memory with 0xFF bytes (NaN, -1) before each block, so
//     a read of shared memory no thread of the block wrote shows up;
//   * arithmetic is IEEE with no contraction (-ffp-contract=off): plain a*b+c is not fused as nvcc
//     would fuse it; the _rn intrinsics are never fused on either side. expf/logf come from glibc.
// Not modelled: warp intrinsics and warp-synchronous code (no lockstep), cooperative groups,
// textures, __constant__ uploads, streams, dynamic parallelism.
#pragma once

// Few and light headers: g++ spends most of a small module's build time parsing them.
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <math.h>
#include <sys/mman.h>
#include <type_traits>
#include <utility>
#include <vector>

#if !defined(__x86_64__)
#error "shim.h: the fibre switch is x86-64 assembly"
#endif

// ------------------------------------------------------------------ CUDA keywords and indices
#define __global__
#define __device__
#define __host__
#define __forceinline__ inline __attribute__((always_inline))
#define __noinline__ __attribute__((noinline))
#define __launch_bounds__(...)
#define __align__(n) alignas(n)
#define __shared__ static __attribute__((section("cuda_cpu_shared"), aligned(16)))
#define __constant__ static
#define __CUDACC__ 1
#define __CUDA_ARCH__ 800

struct uint3 { unsigned x, y, z; };
struct dim3 {
    unsigned x, y, z;
    constexpr dim3(unsigned x_ = 1, unsigned y_ = 1, unsigned z_ = 1) : x(x_), y(y_), z(z_) {}
};
static uint3 threadIdx, blockIdx;
static dim3 blockDim, gridDim;
static constexpr int warpSize = 32;

extern "C" char __start_cuda_cpu_shared[] __attribute__((weak, visibility("hidden")));
extern "C" char __stop_cuda_cpu_shared[] __attribute__((weak, visibility("hidden")));

// ------------------------------------------------------------------ fibres
// switch(save, next): push the callee-saved registers, store rsp in *save, load next, pop, ret.
asm(R"(
    .text
    .p2align 4
    .type cuda_cpu_switch,@function
cuda_cpu_switch:
    pushq %rbp
    pushq %rbx
    pushq %r12
    pushq %r13
    pushq %r14
    pushq %r15
    movq %rsp, (%rdi)
    movq %rsi, %rsp
    popq %r15
    popq %r14
    popq %r13
    popq %r12
    popq %rbx
    popq %rbp
    ret
    .size cuda_cpu_switch, .-cuda_cpu_switch
)");
extern "C" void cuda_cpu_switch(void** save, void* next) __attribute__((visibility("hidden")));

namespace cuda_cpu {

enum State : unsigned char { READY, WAITING, DONE };
struct Fibre {
    void* sp;
    char* stack;
    int line;  // source line of the barrier it waits at
    uint3 tid;
    State state;
};

static constexpr size_t kStack = 256 * 1024, kPage = 4096;
static void* g_sched;                    // the scheduler's stack pointer
static Fibre* g_current;
static void (*g_body)(void*);            // the kernel call of this launch
static void* g_body_args;
static std::vector<char*> g_stacks;      // free stacks, reused across blocks and launches
static std::vector<Fibre> g_fibres;
static std::vector<unsigned> g_order;
static std::vector<unsigned char> g_dynamic;  // dynamic shared memory of the launch
static int g_schedule = 0;               // 0 forward, 1 reverse, 2 random
static uint64_t g_rng = 1;               // splitmix64 state of the random schedule
static bool g_poison = true;
static unsigned long long g_barriers, g_divergent;
static char g_error[256];

static uint64_t next_random()
{
    uint64_t z = (g_rng += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

template <typename T>
static void shuffle(std::vector<T>& v)  // Fisher-Yates
{
    for (size_t i = v.size(); i > 1; i--) {
        size_t j = next_random() % i;
        T t = v[i - 1];
        v[i - 1] = v[j];
        v[j] = t;
    }
}

static char* take_stack()
{
    if (!g_stacks.empty()) {
        char* s = g_stacks.back();
        g_stacks.pop_back();
        return s;
    }
    // a guard page under each stack turns an overflow into a crash instead of corruption
    void* p = mmap(nullptr, kStack + kPage, PROT_READ | PROT_WRITE,
                   MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (p == MAP_FAILED) { std::fputs("cuda_cpu: no memory for fibre stacks\n", stderr); std::abort(); }
    mprotect(p, kPage, PROT_NONE);
    return static_cast<char*>(p) + kPage;
}

[[noreturn]] static void fibre_entry()
{
    g_body(g_body_args);
    g_current->state = DONE;
    cuda_cpu_switch(&g_current->sp, g_sched);
    __builtin_unreachable();
}

static void start(Fibre& f)
{
    f.stack = take_stack();
    auto top = (reinterpret_cast<uintptr_t>(f.stack) + kStack) & ~uintptr_t(15);
    void** sp = reinterpret_cast<void**>(top);
    *--sp = nullptr;                                  // alignment slot (fibre_entry never returns)
    *--sp = reinterpret_cast<void*>(&fibre_entry);    // where the first switch's `ret` goes
    for (int i = 0; i < 6; i++) *--sp = nullptr;      // the six callee-saved registers
    f.sp = sp;
}

static void order_threads(unsigned n)
{
    for (unsigned i = 0; i < n; i++) g_order[i] = g_schedule == 1 ? n - 1 - i : i;
    if (g_schedule == 2) shuffle(g_order);
}

static void run_block()
{
    const unsigned nx = blockDim.x, ny = blockDim.y, n = nx * ny * blockDim.z;
    g_fibres.assign(n, Fibre{});
    g_order.resize(n);
    for (unsigned i = 0; i < n; i++) {
        g_fibres[i].tid = uint3{i % nx, (i / nx) % ny, i / (nx * ny)};
        g_fibres[i].stack = nullptr;
    }
    for (bool first = true;; first = false) {
        order_threads(n);
        unsigned waiting = 0;
        for (unsigned k = 0; k < n; k++) {
            Fibre& f = g_fibres[g_order[k]];
            if (first) start(f);
            else if (f.state != READY) continue;
            g_current = &f;
            threadIdx = f.tid;
            cuda_cpu_switch(&g_sched, f.sp);
            if (f.state == DONE) g_stacks.push_back(f.stack);
            else waiting++;
        }
        if (!waiting) return;
        int line = -1;  // all live threads wait: release them, noting barriers at other lines
        bool divergent = false;
        for (Fibre& f : g_fibres) {
            if (f.state != WAITING) continue;
            divergent |= line >= 0 && f.line != line;
            line = f.line;
            f.state = READY;
        }
        g_barriers++;
        g_divergent += divergent;
    }
}

static void poison_shared()
{
    if (!g_poison) return;
    if (__start_cuda_cpu_shared)
        std::memset(__start_cuda_cpu_shared, 0xFF, __stop_cuda_cpu_shared - __start_cuda_cpu_shared);
    if (!g_dynamic.empty()) std::memset(g_dynamic.data(), 0xFF, g_dynamic.size());
}

template <typename... A, size_t... I>
static void call(void (*k)(A...), void** args, std::index_sequence<I...>)
{
    k(*static_cast<std::remove_cv_t<std::remove_reference_t<A>>*>(args[I])...);
}

template <typename... A>
struct Call {
    void (*kernel)(A...);
    void** args;  // the driver API's kernelParams: one pointer per argument
    static void run(void* self)
    {
        auto* c = static_cast<Call*>(self);
        call(c->kernel, c->args, std::index_sequence_for<A...>{});
    }
};

// 0, or -1 with the reason in g_error (what cudaLaunchKernel would reject)
template <typename... A>
static int launch(void (*kernel)(A...), dim3 grid, dim3 block, size_t shmem, void** args)
{
    const unsigned long long threads = 1ULL * block.x * block.y * block.z;
    const unsigned long long blocks = 1ULL * grid.x * grid.y * grid.z;
    if (!threads || !blocks || threads > 1024 || block.z > 64 || grid.y > 65535 || grid.z > 65535) {
        std::snprintf(g_error, sizeof g_error, "invalid launch configuration: grid (%u,%u,%u) "
                      "block (%u,%u,%u)", grid.x, grid.y, grid.z, block.x, block.y, block.z);
        return -1;
    }
    if (shmem > 227 * 1024) {
        std::snprintf(g_error, sizeof g_error, "%zu bytes of dynamic shared memory exceed 227 KiB", shmem);
        return -1;
    }
    g_dynamic.assign(shmem, 0);
    Call<A...> c{kernel, args};
    g_body = &Call<A...>::run;
    g_body_args = &c;
    gridDim = grid;
    blockDim = block;
    g_barriers = g_divergent = 0;
    std::vector<unsigned long long> order(blocks);
    for (unsigned long long b = 0; b < blocks; b++) order[b] = g_schedule == 1 ? blocks - 1 - b : b;
    if (g_schedule == 2) shuffle(order);
    for (unsigned long long b : order) {
        blockIdx = uint3{unsigned(b % grid.x), unsigned(b / grid.x % grid.y),
                         unsigned(b / (1ULL * grid.x * grid.y))};
        poison_shared();
        run_block();
    }
    return 0;
}

// One code per parameter, for the host to check its arguments: f4, i4, u8, b1 for scalars,
// p:f4 for a pointer to float (p:v void*), ? for a struct by value.
template <typename T>
static void append_code(char* out)
{
    using U = std::remove_cv_t<std::remove_reference_t<T>>;
    char* end = out + std::strlen(out);
    if (end != out) *end++ = ' ';
    if constexpr (std::is_pointer_v<U>) {
        std::strcpy(end, "p:");
        end += 2;
        using P = std::remove_cv_t<std::remove_pointer_t<U>>;
        if constexpr (std::is_void_v<P>) std::strcpy(end, "v");
        else if constexpr (std::is_same_v<P, bool>) std::strcpy(end, "b1");
        else if constexpr (std::is_floating_point_v<P>) std::sprintf(end, "f%zu", sizeof(P));
        else if constexpr (std::is_integral_v<P>) std::sprintf(end, "%c%zu", std::is_signed_v<P> ? 'i' : 'u', sizeof(P));
        else std::strcpy(end, "?");
    } else if constexpr (std::is_same_v<U, bool>) std::strcpy(end, "b1");
    else if constexpr (std::is_floating_point_v<U>) std::sprintf(end, "f%zu", sizeof(U));
    else if constexpr (std::is_integral_v<U>) std::sprintf(end, "%c%zu", std::is_signed_v<U> ? 'i' : 'u', sizeof(U));
    else std::strcpy(end, "?");
}

template <typename... A>
static const char* signature(void (*)(A...))
{
    static char text[1024];
    if (!text[0]) (append_code<A>(text), ...);
    return text;
}

}  // namespace cuda_cpu

static inline void* cuda_cpu_dynamic_shared() { return cuda_cpu::g_dynamic.data(); }

// The barrier is identified by its source line (the optimiser may duplicate a call site).
__attribute__((noinline)) static void cuda_cpu_barrier(int line)
{
    cuda_cpu::Fibre* f = cuda_cpu::g_current;
    f->state = cuda_cpu::WAITING;
    f->line = line;
    cuda_cpu_switch(&f->sp, cuda_cpu::g_sched);
}
#define __syncthreads() cuda_cpu_barrier(__LINE__)
static inline void __threadfence() {}
static inline void __threadfence_block() {}

// ------------------------------------------------------------------ arithmetic
using std::isfinite;
using std::isinf;
using std::isnan;

// CUDA's min/max for any pair of arithmetic types (usual conversions)
template <typename A, typename B, typename = std::enable_if_t<std::is_arithmetic_v<A> && std::is_arithmetic_v<B>>>
static inline std::common_type_t<A, B> max(A a, B b)
{
    using C = std::common_type_t<A, B>;
    if constexpr (std::is_floating_point_v<C>) return std::fmax(C(a), C(b));
    else return C(a) > C(b) ? C(a) : C(b);
}
template <typename A, typename B, typename = std::enable_if_t<std::is_arithmetic_v<A> && std::is_arithmetic_v<B>>>
static inline std::common_type_t<A, B> min(A a, B b)
{
    using C = std::common_type_t<A, B>;
    if constexpr (std::is_floating_point_v<C>) return std::fmin(C(a), C(b));
    else return C(a) < C(b) ? C(a) : C(b);
}

// Rounded once each, never contracted: the empty asm hides the values from the optimiser, so even
// a build that allows contraction cannot fuse them (nvcc never fuses the _rn intrinsics either).
#define CUDA_CPU_OPAQUE(v) asm("" : "+x"(v))
static inline float __fadd_rn(float a, float b) { CUDA_CPU_OPAQUE(a); CUDA_CPU_OPAQUE(b); return a + b; }
static inline float __fsub_rn(float a, float b) { CUDA_CPU_OPAQUE(a); CUDA_CPU_OPAQUE(b); return a - b; }
static inline float __fmul_rn(float a, float b) { float r = a * b; CUDA_CPU_OPAQUE(r); return r; }
static inline float __fdiv_rn(float a, float b) { return a / b; }
static inline float __fsqrt_rn(float a) { return std::sqrt(a); }
static inline float __fmaf_rn(float a, float b, float c) { return std::fma(a, b, c); }
static inline double __dadd_rn(double a, double b) { CUDA_CPU_OPAQUE(a); CUDA_CPU_OPAQUE(b); return a + b; }
static inline double __dsub_rn(double a, double b) { CUDA_CPU_OPAQUE(a); CUDA_CPU_OPAQUE(b); return a - b; }
static inline double __dmul_rn(double a, double b) { double r = a * b; CUDA_CPU_OPAQUE(r); return r; }
static inline double __ddiv_rn(double a, double b) { return a / b; }
static inline double __fma_rn(double a, double b, double c) { return std::fma(a, b, c); }

static inline double __longlong_as_double(long long x) { double d; std::memcpy(&d, &x, 8); return d; }
static inline long long __double_as_longlong(double d) { long long x; std::memcpy(&x, &d, 8); return x; }
static inline float __int_as_float(int x) { float f; std::memcpy(&f, &x, 4); return f; }
static inline int __float_as_int(float f) { int x; std::memcpy(&x, &f, 4); return x; }

static inline float __double2float_rn(double d) { return (float)d; }
static inline float __double2float_rz(double d)  // nearest, then one ulp toward zero if it overshot
{
    float f = (float)d;
    if (std::fabs((double)f) > std::fabs(d)) f = std::nextafter(f, 0.0f);
    return f;
}
// float -> int as the GPU converts: saturating, NaN -> 0 (x86 gives INT_MIN)
template <typename F>
static inline int cuda_cpu_to_int(F x)
{
    if (x != x) return 0;
    if (x <= (F)INT32_MIN) return INT32_MIN;  // <cstdint>
    if (x >= (F)INT32_MAX) return INT32_MAX;
    return (int)x;
}
static inline int __float2int_rn(float x) { return cuda_cpu_to_int(std::nearbyint(x)); }
static inline int __float2int_rz(float x) { return cuda_cpu_to_int(std::trunc(x)); }
static inline int __float2int_rd(float x) { return cuda_cpu_to_int(std::floor(x)); }
static inline int __double2int_rn(double x) { return cuda_cpu_to_int(std::nearbyint(x)); }

// ------------------------------------------------------------------ atomics (return the old value)
#define CUDA_CPU_ATOMIC(NAME, NEW)                                   \
    template <typename T, typename V>                                \
    static inline T NAME(T* p, V value)                              \
    {                                                                \
        const T v = (T)value, old = *p;                              \
        *p = (NEW);                                                  \
        return old;                                                  \
    }
CUDA_CPU_ATOMIC(atomicAdd, old + v)
CUDA_CPU_ATOMIC(atomicSub, old - v)
CUDA_CPU_ATOMIC(atomicExch, v)
CUDA_CPU_ATOMIC(atomicMax, old > v ? old : v)
CUDA_CPU_ATOMIC(atomicMin, old < v ? old : v)
CUDA_CPU_ATOMIC(atomicOr, old | v)
#undef CUDA_CPU_ATOMIC
template <typename T, typename V, typename W>
static inline T atomicCAS(T* p, V compare, W value)
{
    const T old = *p;
    if (old == (T)compare) *p = (T)value;
    return old;
}

// ------------------------------------------------------------------ exported entry points
#define CUDA_CPU_EXPORT(NAME)                                                                   \
    extern "C" __attribute__((visibility("default"))) int cuda_cpu_launch_##NAME(              \
        const unsigned* g, const unsigned* b, size_t shmem, void** args)                        \
    {                                                                                           \
        return cuda_cpu::launch(&NAME, dim3(g[0], g[1], g[2]), dim3(b[0], b[1], b[2]), shmem, args); \
    }                                                                                           \
    extern "C" __attribute__((visibility("default"))) const char* cuda_cpu_signature_##NAME()  \
    {                                                                                           \
        return cuda_cpu::signature(&NAME);                                                      \
    }

extern "C" __attribute__((visibility("default"))) const char* cuda_cpu_error() { return cuda_cpu::g_error; }
extern "C" __attribute__((visibility("default"))) void cuda_cpu_configure(int schedule,
                                                                          unsigned long long seed, int poison)
{
    cuda_cpu::g_schedule = schedule;
    cuda_cpu::g_rng = seed;
    cuda_cpu::g_poison = poison != 0;
}
extern "C" __attribute__((visibility("default"))) void cuda_cpu_stats(unsigned long long* out)
{
    out[0] = cuda_cpu::g_barriers;
    out[1] = cuda_cpu::g_divergent;
}
