/* A process that sees a lesser x86 CPU: CPUID answers with the instruction sets above a chosen level cleared.
 *
 * Loaded with LD_PRELOAD (tools/cpu_emulation/as_cpu.sh builds and loads it). Linux's CPUID faulting
 * (arch_prctl(ARCH_SET_CPUID, 0); the CPU flag `cpuid_fault`) turns each CPUID instruction of the process into
 * a SIGSEGV; the handler below runs the real CPUID, clears the feature bits above SIGLIP_CPUID_LEVEL and steps
 * over the instruction. Every library that reads the CPU by CPUID then takes the paths that CPU would: PyTorch's
 * own kernels (cpuinfo), oneDNN, MKL, FBGEMM, ONNX Runtime's MLAS, OpenVINO. Only the instruction sets change:
 * caches, core counts and clock are the host's. /proc/cpuinfo is the kernel's and still lists the host's flags.
 *
 * Levels: AVX2 (AVX2 + FMA: AMD Zen 2/3, Haswell..Comet Lake), AVX2_VNNI (adds AVX-VNNI: Alder Lake client),
 * AVX512_CORE (Skylake-X: AVX-512 F/CD/BW/DQ/VL, no VNNI), AVX512_CORE_VNNI (Cascade Lake, Ice Lake),
 * AVX512_CORE_BF16 (Cooper Lake, Zen 4: adds avx512_bf16), none (no change).
 *
 * Threads inherit the fault setting from their creator; execve resets it, and LD_PRELOAD brings the handler back.
 * The process's own SIGSEGV handlers (Python's faulthandler, glog's in Ray's servers) are chained, not installed:
 * sigaction() and signal() are interposed for SIGSEGV, and a fault that is not a CPUID goes to the handler the
 * process set (or to the default action, a core dump). A program that sets handlers by raw system calls (Go)
 * replaces this one and dies at its next CPUID.
 */
#define _GNU_SOURCE
#include <asm/prctl.h>
#include <dlfcn.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <ucontext.h>
#include <unistd.h>

#ifndef ARCH_SET_CPUID
#define ARCH_SET_CPUID 0x1012
#endif

enum level { AVX2, AVX2_VNNI, AVX512_CORE, AVX512_CORE_VNNI, AVX512_CORE_BF16, UNCHANGED };

static enum level chosen = UNCHANGED;

#define BIT(n) (1u << (n))

static long set_cpuid(unsigned long enabled) { return syscall(SYS_arch_prctl, ARCH_SET_CPUID, enabled); }

static void real_cpuid(uint32_t leaf, uint32_t subleaf, uint32_t out[4]) {
    set_cpuid(1);
    __asm__ volatile("cpuid" : "=a"(out[0]), "=b"(out[1]), "=c"(out[2]), "=d"(out[3]) : "a"(leaf), "c"(subleaf));
    set_cpuid(0);
}

/* Clear, in place, what the chosen level lacks. Leaf 7 subleaf 0 (EBX, ECX, EDX) and subleaf 1 (EAX, EDX). */
static void mask(uint32_t leaf, uint32_t subleaf, uint32_t r[4]) {
    if (leaf != 7 || chosen == UNCHANGED) return;
    if (subleaf == 0) {
        /* AMX (tile, int8, bf16, fp16 in EDX 22-25), AVX512_FP16 (EDX 23), VP2INTERSECT (EDX 8), 4VNNIW/4FMAPS */
        r[3] &= ~(BIT(2) | BIT(3) | BIT(8) | BIT(22) | BIT(23) | BIT(24) | BIT(25));
        /* VBMI, VBMI2, GFNI's AVX-512 forms are gated by avx512f; BITALG, VPOPCNTDQ, and VNNI (ECX 11) */
        r[2] &= ~(BIT(1) | BIT(6) | BIT(12) | BIT(14));
        if (chosen < AVX512_CORE_VNNI) r[2] &= ~BIT(11);
        /* IFMA (21), PF (26), ER (27) always; F (16), DQ (17), CD (28), BW (30), VL (31) below AVX512_CORE */
        r[1] &= ~(BIT(21) | BIT(26) | BIT(27));
        if (chosen < AVX512_CORE) r[1] &= ~(BIT(16) | BIT(17) | BIT(28) | BIT(30) | BIT(31));
    } else if (subleaf == 1) {
        /* AVX_VNNI (EAX 4) only at AVX2_VNNI; AVX512_BF16 (EAX 5) only at AVX512_CORE_BF16; AMX_FP16 (21),
           AVX_IFMA (23) never; EDX: AVX_VNNI_INT8 (4), AVX_NE_CONVERT (5), AMX_COMPLEX (8), AVX10 (19) never */
        if (chosen != AVX2_VNNI) r[0] &= ~BIT(4);
        if (chosen != AVX512_CORE_BF16) r[0] &= ~BIT(5);
        r[0] &= ~(BIT(21) | BIT(23));
        r[3] &= ~(BIT(4) | BIT(5) | BIT(8) | BIT(19));
    }
}

/* What the process asked for SIGSEGV (its own handler, or the default), kept while this handler stays installed. */
static struct sigaction wanted = {.sa_handler = SIG_DFL};
static int (*real_sigaction)(int, const struct sigaction *, struct sigaction *);

static int call_sigaction(int signal, const struct sigaction *action, struct sigaction *old) {
    if (real_sigaction == NULL) real_sigaction = dlsym(RTLD_NEXT, "sigaction");
    return real_sigaction(signal, action, old);
}

static void on_fault(int signal, siginfo_t *info, void *context) {
    ucontext_t *uc = context;
    greg_t *regs = uc->uc_mcontext.gregs;
    /* A faulting CPUID is a general-protection fault: SI_KERNEL, and the instruction 0F A2 at RIP. */
    if (info->si_code == SI_KERNEL) {
        const unsigned char *ip = (const unsigned char *)regs[REG_RIP];
        if (ip[0] == 0x0f && ip[1] == 0xa2) {
            uint32_t r[4];
            uint32_t leaf = (uint32_t)regs[REG_RAX], subleaf = (uint32_t)regs[REG_RCX];
            real_cpuid(leaf, subleaf, r);
            mask(leaf, subleaf, r);
            regs[REG_RAX] = r[0];
            regs[REG_RBX] = r[1];
            regs[REG_RCX] = r[2];
            regs[REG_RDX] = r[3];
            regs[REG_RIP] += 2;
            return;
        }
    }
    /* Not ours: the process's handler, or its default action when the instruction runs again. */
    if ((wanted.sa_flags & SA_SIGINFO) && wanted.sa_sigaction != NULL) {
        wanted.sa_sigaction(signal, info, context);
    } else if (wanted.sa_handler != SIG_DFL && wanted.sa_handler != SIG_IGN) {
        wanted.sa_handler(signal);
    } else {
        struct sigaction fallback;
        memset(&fallback, 0, sizeof fallback);
        fallback.sa_handler = SIG_DFL;
        call_sigaction(signal, &fallback, NULL);
    }
}

int sigaction(int signal, const struct sigaction *action, struct sigaction *old) {
    if (signal != SIGSEGV || chosen == UNCHANGED) return call_sigaction(signal, action, old);
    if (old != NULL) *old = wanted;
    if (action != NULL) wanted = *action;
    return 0;
}

sighandler_t signal(int number, sighandler_t handler) {
    struct sigaction action, old;
    memset(&action, 0, sizeof action);
    action.sa_handler = handler;
    action.sa_flags = SA_RESTART;
    sigemptyset(&action.sa_mask);
    if (sigaction(number, &action, &old) != 0) return SIG_ERR;
    return old.sa_handler;
}

__attribute__((constructor)) static void install(void) {
    const char *name = getenv("SIGLIP_CPUID_LEVEL");
    static const char *names[] = {"AVX2", "AVX2_VNNI", "AVX512_CORE", "AVX512_CORE_VNNI", "AVX512_CORE_BF16"};
    if (name == NULL || *name == 0 || strcasecmp(name, "none") == 0) return;
    for (int i = 0; i < 5; i++)
        if (strcasecmp(name, names[i]) == 0) chosen = (enum level)i;
    if (chosen == UNCHANGED) {
        fprintf(stderr, "cpuid_mask: unknown SIGLIP_CPUID_LEVEL=%s (AVX2, AVX2_VNNI, AVX512_CORE, "
                        "AVX512_CORE_VNNI, AVX512_CORE_BF16, none)\n", name);
        _exit(2);
    }
    struct sigaction action;
    memset(&action, 0, sizeof action);
    action.sa_sigaction = on_fault;
    action.sa_flags = SA_SIGINFO | SA_NODEFER;
    sigemptyset(&action.sa_mask);
    call_sigaction(SIGSEGV, &action, &wanted);
    if (set_cpuid(0) != 0) {
        perror("cpuid_mask: arch_prctl(ARCH_SET_CPUID) (needs Linux on x86 with the cpuid_fault flag)");
        _exit(2);
    }
}
