#pragma once
// What hpctrain's LibTorch-free CPU loops (models/*Kernels.cpp) are compiled for: with GCC on
// x86-64, HPCTRAIN_CLONES gives a function one clone per instruction set (x86-64-v4, i.e.
// AVX-512; v3, AVX2; the baseline), chosen when the library loads, so one binary runs everywhere
// and vectorizes as wide as the CPU allows. Elsewhere (and under AddressSanitizer, which does
// not take ifunc resolvers) the plain function.
#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__) && !defined(__SANITIZE_ADDRESS__)
#define HPCTRAIN_CLONES __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#else
#define HPCTRAIN_CLONES
#endif
