# A real appliance for VM tests (sourced): start_appliance DIR BIN sets DATA, PORT, URL (as a QEMU
# guest on user networking reaches it), LOCAL_URL, ENROLL and BACKUP tokens, SERVE_PID.
start_appliance() {
    local dir=$1 bin=$2
    DATA=$dir/data
    mkdir -p "$dir"
    "$bin/appliance" init --json --data "$DATA" >"$dir/init.json" || return 1
    ENROLL=$("$bin/appliance" token create --role enroll --data "$DATA") || return 1
    BACKUP=$("$bin/appliance" token create --role backup --machine "debian12-*" --data "$DATA") || return 1
    PORT=$(free_port)
    "$bin/appliance" serve --data "$DATA" --listen "127.0.0.1:$PORT" >"$dir/serve.log" 2>&1 &
    SERVE_PID=$!
    local _
    for _ in $(seq 200); do (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null && break; sleep 0.1; done
    (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null || return 1
    URL=https://10.0.2.2:$PORT
    LOCAL_URL=https://127.0.0.1:$PORT
}
