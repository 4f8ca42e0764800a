/*
 * version.c: `dmtls version`: dmtls and wolfSSL versions, which wolfSSL is
 * linked and where its source came from, the build properties dmtls relies
 * on, and whether its AES assembly runs on this CPU.
 */
#include <stdio.h>
#if defined(__aarch64__)
#include <sys/auxv.h>
#endif

#include <wolfssl/options.h>
#include <wolfssl/ssl.h>
#include <wolfssl/version.h>

#include "config.h"
#include "version.h"

/* 1 when this CPU has the AES instructions. */
static int
cpu_has_aes(void)
{
#if defined(__x86_64__) || defined(__i386__)
	__builtin_cpu_init();
	return (__builtin_cpu_supports("aes") &&
	    __builtin_cpu_supports("pclmul"));
#elif defined(__aarch64__)
	return ((getauxval(AT_HWCAP) & (1 << 3)) != 0);	/* HWCAP_AES */
#else
	return (0);
#endif
}

int
aes_asm_built(void)
{
#if defined(WOLFSSL_AESNI) || defined(WOLFSSL_ARMASM)
	return (1);
#else
	return (0);
#endif
}

int
aes_asm_in_use(void)
{
	return (aes_asm_built() && cpu_has_aes());
}

void
version_print(FILE *f)
{
	const char *kind = DMTLS_WOLFSSL_KIND;
	const char *what;

#if defined(__aarch64__)
	const char *isa = "ARMv8 crypto";
#else
	const char *isa = "AES-NI";
#endif
	if (kind[0] == 'b')
		what = "bundled assembly build, linked statically";
	else if (kind[0] == 's')
		what = "system library";
	else
		what = "from --with-wolfssl PREFIX";
	fprintf(f, "dmtls %s\n", PACKAGE_VERSION);
	fprintf(f, "wolfSSL %s (%s)\n", wolfSSL_lib_version(), what);
	fprintf(f, "wolfSSL source: %s\n", DMTLS_WOLFSSL_ORIGIN);
	/* configure refuses a wolfSSL without it: the allow-list needs it. */
#ifdef WOLFSSL_ALWAYS_VERIFY_CB
	fprintf(f, "verify callback on every certificate: yes\n");
#else
	fprintf(f, "verify callback on every certificate: NO (the allow-list "
	    "is not applied)\n");
#endif
#ifdef DMTLS_KEX_HYBRID
	fprintf(f, "key exchange: servers prefer X25519MLKEM768, then X25519, "
	    "P-256; clients send P-256 and X25519MLKEM768 shares\n");
#else
	fprintf(f, "key exchange: classical only (X25519, P-256); no "
	    "post-quantum hybrid\n");
#endif
	fprintf(f, "%s: %s\n", isa, aes_asm_in_use() ? "in use" :
	    aes_asm_built() ? "built in, but this CPU lacks it" :
	    "not built in (bulk crypto runs the slow C code)");
#if defined(WOLFSSL_SP_X86_64_ASM) || defined(WOLFSSL_SP_ARM64_ASM)
	fprintf(f, "SP math assembly: in use\n");
#else
	fprintf(f, "SP math assembly: not built in\n");
#endif
#if defined(__SANITIZE_ADDRESS__)
	fprintf(f, "sanitizers: address, undefined (a test build: slower, "
	    "more memory)\n");
	fprintf(f, "sandbox: no_new_privs, Landlock, seccomp; relaxed for the "
	    "sanitizers: /proc readable, ptrace allowed (LeakSanitizer)\n");
#else
	fprintf(f, "sandbox: no_new_privs, Landlock, seccomp (sandbox = false "
	    "turns it off)\n");
#endif
}
