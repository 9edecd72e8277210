# Shell helpers the benchmark scripts share (sourced, not run).

# free_port: prints a TCP port free on loopback when asked.
free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# listening PORT: whether something accepts connections on 127.0.0.1:PORT.
listening() { (: </dev/tcp/127.0.0.1/"$1") 2>/dev/null; }

# wait_for WHAT COMMAND...: runs COMMAND every 0.05 s until it succeeds, for
# at most WAIT_FOR_S seconds (default 20); then fails, naming WHAT.
wait_for() {
    local what="$1" i
    shift
    for i in $(seq 1 $((${WAIT_FOR_S:-20} * 20))); do
        if "$@" >/dev/null 2>&1; then return 0; fi
        sleep 0.05
    done
    echo "timed out waiting for $what" >&2
    return 1
}
