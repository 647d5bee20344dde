/* libkrun's C API as function-pointer types, for loading the library at run time.
 *
 * libkrun is never linked: the krun backend dlopen()s "libkrun.so.1" (see
 * /work/shared/notes/libkrun.md, section 1.1) and dlsym()s each symbol into one of these types,
 * so a host without libkrun still runs every other backend. The prototypes are written from
 * libkrun's public header (include/libkrun.h) as documented in the notes; each line says the
 * release that introduced the call, because an older library simply lacks the symbol.
 *
 * Conventions (libkrun): every call returns int32_t, 0 or a NEGATIVE errno, and never sets
 * errno. String arrays are NULL-terminated. An envp of NULL copies the host environment into
 * the guest: always pass an explicit array.
 */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

/* v0.1.1 */
typedef int32_t (*ckrun_set_log_level_fn)(uint32_t level);
typedef int32_t (*ckrun_create_ctx_fn)(void);
typedef int32_t (*ckrun_free_ctx_fn)(uint32_t ctx_id);
typedef int32_t (*ckrun_set_vm_config_fn)(uint32_t ctx_id, uint8_t num_vcpus, uint32_t ram_mib);
typedef int32_t (*ckrun_set_root_fn)(uint32_t ctx_id, const char *root_path);
typedef int32_t (*ckrun_set_exec_fn)(uint32_t ctx_id, const char *exec_path,
                                     const char *const argv[], const char *const envp[]);
typedef int32_t (*ckrun_start_enter_fn)(uint32_t ctx_id);
/* v0.1.3 */
typedef int32_t (*ckrun_set_workdir_fn)(uint32_t ctx_id, const char *workdir_path);
/* v0.1.3 (TSI only): "HOST:GUEST" entries; NULL exposes every listening guest port, an empty
 * array (just the NULL terminator) exposes none. */
typedef int32_t (*ckrun_set_port_map_fn)(uint32_t ctx_id, const char *const port_map[]);
/* v0.1.5: entries "RESOURCE=CUR:MAX" with the numeric RLIMIT_* id. */
typedef int32_t (*ckrun_set_rlimits_fn)(uint32_t ctx_id, const char *const rlimits[]);
/* v1.3.0 */
typedef int32_t (*ckrun_set_env_fn)(uint32_t ctx_id, const char *const envp[]);
/* v1.8.0 */
typedef int32_t (*ckrun_set_console_output_fn)(uint32_t ctx_id, const char *c_filepath);
typedef int32_t (*ckrun_add_vsock_port_fn)(uint32_t ctx_id, uint32_t port, const char *c_filepath);
/* v1.10.0: listen=true makes libkrun listen on c_filepath for the guest's listening port;
 * -EEXIST when the path exists (unlink stale sockets first). */
typedef int32_t (*ckrun_add_vsock_port2_fn)(uint32_t ctx_id, uint32_t port, const char *c_filepath,
                                            bool listen);
/* v1.17.0: plain vsock without TSI (no guest network through the host). */
typedef int32_t (*ckrun_disable_implicit_vsock_fn)(uint32_t ctx_id);
typedef int32_t (*ckrun_add_vsock_fn)(uint32_t ctx_id, uint32_t tsi_features);

/* The guest's vsock port the agent listens on by default (vsock:2695). */
#define CKRUN_AGENT_VSOCK_PORT 2695u
/* The agent's tunnel endpoint (exposed ports): one vsock connection per tunnelled connection. */
#define CKRUN_TUNNEL_VSOCK_PORT 2696u
