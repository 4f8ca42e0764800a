# test/fuzz/fuzz.mk: the libFuzzer targets (GNU make), run by `make fuzz`
# with what configure found (see Makefile.am):
#
#   make -f test/fuzz/fuzz.mk srcdir=. top_builddir=. DMTLS_SRCS='...'
#
# dmtls's own sources are compiled again, with clang, coverage and the
# sanitizers (-fsanitize=fuzzer-no-link,address,undefined), into
# FUZZ_OUT/obj; they link against the sanitizer-instrumented wolfSSL of
# `build-aux/wolfssl-bundle --fuzz`, built once into its own cache folder.
# The gcc objects of the ordinary build are left alone.

srcdir		?= .
top_builddir	?= .
FUZZ_CC		?= clang
FUZZ_OUT	?= test/fuzz/build
FUZZ_OPT	?= -O1 -g
FUZZ_SAN	 = -fsanitize=address,undefined -fno-sanitize-recover=undefined \
		   -fno-omit-frame-pointer
TARGETS		 = mysqlproto mysql hello tls_accept peerid certset crl config log

WOLFSSL_FUZZ	:= $(shell FUZZ_CC='$(FUZZ_CC)' $(srcdir)/build-aux/wolfssl-bundle --fuzz | tail -n 1)
ifeq ($(wildcard $(WOLFSSL_FUZZ)/lib/libwolfssl.a),)
$(error the instrumented wolfSSL did not build: run $(srcdir)/build-aux/wolfssl-bundle --fuzz and read its messages)
endif

CPPFLAGS_FUZZ	 = -I$(top_builddir) -I$(srcdir) -D_GNU_SOURCE \
		   -include $(top_builddir)/config.h \
		   -I$(WOLFSSL_FUZZ)/include $(LIBEVENT_CFLAGS) $(LIBCONFIG_CFLAGS) \
		   $(LIBSECCOMP_CFLAGS)
CFLAGS_FUZZ	 = $(FUZZ_OPT) $(FUZZ_SAN) -fsanitize=fuzzer-no-link -pthread \
		   $(WARN_CFLAGS) -MMD -MP
LIBS_FUZZ	 = $(WOLFSSL_FUZZ)/lib/libwolfssl.a $(LIBEVENT_LIBS) \
		   $(LIBCONFIG_LIBS) $(LIBSECCOMP_LIBS) -lm -lpthread

LIB_SRCS	 = $(filter %.c,$(DMTLS_SRCS))
LIB_OBJS	 = $(patsubst %.c,$(FUZZ_OUT)/obj/%.o,$(LIB_SRCS))
COMMON_OBJS	 = $(FUZZ_OUT)/obj/test/fuzz/fuzz.o \
		   $(FUZZ_OUT)/obj/test/fuzz/fuzztls.o
BINS		 = $(patsubst %,$(FUZZ_OUT)/fuzz_%,$(TARGETS))

ifeq ($(strip $(LIB_SRCS)),)
$(error DMTLS_SRCS is empty: run this through `make fuzz`)
endif

# Link-time wraps (fuzz_mysql.c, fuzz_config.c say why).
WRAP_mysql	 = -Wl,--wrap=tls_setup -Wl,--wrap=tls_handshake
WRAP_config	 = -Wl,--wrap=getaddrinfo

all: $(BINS)

$(FUZZ_OUT)/obj/%.o: $(srcdir)/%.c $(WOLFSSL_FUZZ)/include/wolfssl/options.h \
    $(top_builddir)/config.h
	@mkdir -p $(dir $@)
	@echo "  FUZZCC   $<"
	@$(FUZZ_CC) $(CPPFLAGS_FUZZ) $(CFLAGS_FUZZ) -c -o $@ $<

$(FUZZ_OUT)/libdmtls-fuzz.a: $(LIB_OBJS)
	@rm -f $@
	@echo "  AR       $@"
	@ar crs $@ $(LIB_OBJS)

$(FUZZ_OUT)/fuzz_%: $(FUZZ_OUT)/obj/test/fuzz/fuzz_%.o $(COMMON_OBJS) \
    $(FUZZ_OUT)/libdmtls-fuzz.a
	@echo "  FUZZLD   $@"
	@$(FUZZ_CC) $(FUZZ_OPT) $(FUZZ_SAN) -fsanitize=fuzzer -pthread \
	    $(WRAP_$*) -o $@ $(filter %.o,$^) $(FUZZ_OUT)/libdmtls-fuzz.a \
	    $(LIBS_FUZZ)

.PHONY: all
.SECONDARY:
-include $(shell find $(FUZZ_OUT)/obj -name '*.d' 2>/dev/null)
