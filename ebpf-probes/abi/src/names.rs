//! Names of the maps and programs in the probe object, for the agent. The kernel side names
//! them by their identifiers (aya's `#[map]` and program macros take no constant), so the
//! agent's test `probe_object_defines_every_name` checks the built object against this list:
//! a rename on one side fails the build's tests, not a user's attach.

/// Maps the agent opens.
pub mod map {
    pub const EVENTS: &str = "EVENTS";
    pub const TARGET_PIDS: &str = "TARGET_PIDS";
    pub const GO_PIDS: &str = "GO_PIDS";
    pub const HEAD_ONLY_PIDS: &str = "HEAD_ONLY_PIDS";
    pub const TARGET_CGROUPS: &str = "TARGET_CGROUPS";
    pub const FD_STATE: &str = "FD_STATE";
    pub const STATS: &str = "STATS";
    pub const ALL: &[&str] = &[EVENTS, TARGET_PIDS, GO_PIDS, HEAD_ONLY_PIDS, TARGET_CGROUPS, FD_STATE, STATS];
}

/// Load-time settings (globals the agent overrides before loading).
pub mod setting {
    pub const PAYLOAD_CAP: &str = "PAYLOAD_CAP";
    pub const CLIENT_FIRST_CAP: &str = "CLIENT_FIRST_CAP";
    pub const CGROUP_FILTER: &str = "CGROUP_FILTER";
    pub const HOOKS_ONLY: &str = "HOOKS_ONLY";
    pub const GO_GOROUTINES: &str = "GO_GOROUTINES";
    pub const LOOP_GATHER: &str = "LOOP_GATHER";
    pub const WAKEUP_BYTES: &str = "WAKEUP_BYTES";
    pub const AGENT_TGID: &str = "AGENT_TGID";
    pub const DISCOVER_EXECS: &str = "DISCOVER_EXECS";
    pub const ALL: &[&str] = &[PAYLOAD_CAP, CLIENT_FIRST_CAP, CGROUP_FILTER, HOOKS_ONLY, GO_GOROUTINES, LOOP_GATHER, WAKEUP_BYTES, AGENT_TGID, DISCOVER_EXECS];
}

/// Programs, by the file that defines them.
pub mod program {
    // syscalls.rs and process.rs: tracepoints (the agent's table says which hook each serves).
    pub const SYS_ENTER_READ: &str = "sys_enter_read";
    pub const SYS_ENTER_RECVFROM: &str = "sys_enter_recvfrom";
    pub const SYS_ENTER_WRITE: &str = "sys_enter_write";
    pub const SYS_ENTER_SENDTO: &str = "sys_enter_sendto";
    pub const SYS_ENTER_READV: &str = "sys_enter_readv";
    pub const SYS_ENTER_WRITEV: &str = "sys_enter_writev";
    pub const SYS_ENTER_RECVMSG: &str = "sys_enter_recvmsg";
    pub const SYS_ENTER_SENDMSG: &str = "sys_enter_sendmsg";
    pub const SYS_ENTER_SENDFILE64: &str = "sys_enter_sendfile64";
    pub const SYS_EXIT_DATA: &str = "sys_exit_data";
    pub const SYS_ENTER_ACCEPT: &str = "sys_enter_accept";
    pub const SYS_EXIT_ACCEPT: &str = "sys_exit_accept";
    pub const SYS_ENTER_CONNECT: &str = "sys_enter_connect";
    pub const SYS_EXIT_CONNECT: &str = "sys_exit_connect";
    pub const INET_SOCK_SET_STATE: &str = "inet_sock_set_state";
    pub const SYS_ENTER_CLOSE: &str = "sys_enter_close";
    pub const SYS_ENTER_PIPE: &str = "sys_enter_pipe";
    pub const SYS_EXIT_PIPE: &str = "sys_exit_pipe";
    pub const TASK_NEWTASK: &str = "task_newtask";
    pub const SCHED_PROCESS_EXEC: &str = "sched_process_exec";
    pub const SCHED_PROCESS_EXIT: &str = "sched_process_exit";
    pub const SYS_ENTER_EXIT_GROUP: &str = "sys_enter_exit_group";
    // tls.rs: OpenSSL.
    pub const SSL_READ: &str = "ssl_read";
    pub const SSL_READ_EX: &str = "ssl_read_ex";
    pub const SSL_WRITE: &str = "ssl_write";
    pub const SSL_WRITE_EX: &str = "ssl_write_ex";
    pub const SSL_RET: &str = "ssl_ret";
    // go_tls.rs: Go crypto/tls and net/http.
    pub const GO_TLS_WRITE: &str = "go_tls_write";
    pub const GO_TLS_READ: &str = "go_tls_read";
    pub const GO_TLS_READ_COPY: &str = "go_tls_read_copy";
    pub const GO_TLS_READ_RET: &str = "go_tls_read_ret";
    pub const GO_HTTP_ROUND_TRIP: &str = "go_http_round_trip";
    pub const GO_HTTP_REQUEST_WRITE: &str = "go_http_request_write";
    pub const GO_GRPC_PUT: &str = "go_grpc_put";
    pub const GO_GRPC_HEADER: &str = "go_grpc_header";
    // units.rs, libuv.rs, asyncio.rs, pyqueue.rs: runtimes' units of work.
    pub const UNIT_RET: &str = "unit_ret";
    pub const UV_STREAM_IO: &str = "uv_stream_io";
    pub const ASYNCIO_TASK_STEP: &str = "asyncio_task_step";
    pub const ASYNCIO_TASK_STEP_STATE: &str = "asyncio_task_step_state";
    pub const ASYNCIO_TASK_INIT: &str = "asyncio_task_init";
    pub const PY_QUEUE_PUT: &str = "py_queue_put";
    pub const PY_QUEUE_GET_RET: &str = "py_queue_get_ret";
    // nghttp2.rs: which callback asked for each client stream (node).
    pub const NGHTTP2_SUBMIT_RET: &str = "nghttp2_submit_ret";
    pub const NGHTTP2_SUBMIT: &str = "nghttp2_submit";
    pub const NGHTTP2_HEADER: &str = "nghttp2_header";
    pub const NGHTTP2_FRAME_END: &str = "nghttp2_frame_end";
    // go_h2.rs: Go's HTTP/2 header fields (x/net, net/http, grpc-go).
    pub const GO_H2_META: &str = "go_h2_meta";
    pub const GO_H2_FIELD: &str = "go_h2_field";
    pub const GO_H2_DECODED: &str = "go_h2_decoded";
    pub const GO_GRPC_WRITE_HEADER: &str = "go_grpc_write_header";
    // discovery.rs: the agent's own marker function.
    pub const DISCOVERY_MARK: &str = "discovery_mark";

    pub const ALL: &[&str] = &[
        SYS_ENTER_READ,
        SYS_ENTER_RECVFROM,
        SYS_ENTER_WRITE,
        SYS_ENTER_SENDTO,
        SYS_ENTER_READV,
        SYS_ENTER_WRITEV,
        SYS_ENTER_RECVMSG,
        SYS_ENTER_SENDMSG,
        SYS_ENTER_SENDFILE64,
        SYS_EXIT_DATA,
        SYS_ENTER_ACCEPT,
        SYS_EXIT_ACCEPT,
        SYS_ENTER_CONNECT,
        SYS_EXIT_CONNECT,
        INET_SOCK_SET_STATE,
        SYS_ENTER_CLOSE,
        SYS_ENTER_PIPE,
        SYS_EXIT_PIPE,
        TASK_NEWTASK,
        SCHED_PROCESS_EXEC,
        SCHED_PROCESS_EXIT,
        SYS_ENTER_EXIT_GROUP,
        SSL_READ,
        SSL_READ_EX,
        SSL_WRITE,
        SSL_WRITE_EX,
        SSL_RET,
        GO_TLS_WRITE,
        GO_TLS_READ,
        GO_TLS_READ_COPY,
        GO_TLS_READ_RET,
        GO_HTTP_ROUND_TRIP,
        GO_HTTP_REQUEST_WRITE,
        GO_GRPC_PUT,
        GO_GRPC_HEADER,
        UNIT_RET,
        UV_STREAM_IO,
        ASYNCIO_TASK_STEP,
        ASYNCIO_TASK_STEP_STATE,
        ASYNCIO_TASK_INIT,
        PY_QUEUE_PUT,
        PY_QUEUE_GET_RET,
        NGHTTP2_SUBMIT_RET,
        NGHTTP2_SUBMIT,
        NGHTTP2_HEADER,
        NGHTTP2_FRAME_END,
        GO_H2_DECODED,
        GO_H2_META,
        GO_H2_FIELD,
        GO_GRPC_WRITE_HEADER,
        DISCOVERY_MARK,
    ];
}
