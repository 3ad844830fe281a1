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

# approve_from_console AGENT-ID BIN: what the operator does before a rescue agent gets a job: read
# the code the agent shows on its console when it enrolls, and approve that enrollment (refused
# if the code differs). Needs DATA, and T with vm.sh's serial helpers.
approve_from_console() {
    local id=$1 bin=$2 code
    wait_serial "enrolled as agent $id \\(code [0-9A-F]{6}\\)" 600 \
        || { echo "the console does not show $id's enrollment code"; return 1; }
    code=$(sgrep -oE "enrolled as agent $id \\(code [0-9A-F]{6}\\)" | tail -1 | sed -E 's/.*code ([0-9A-F]{6}).*/\1/')
    "$bin/appliance" agents approve --data "$DATA" "$id" --code "$code" >"$T/approve.out" 2>&1 \
        || { echo "appliance agents approve $id --code $code: $(cat "$T/approve.out")"; return 1; }
    echo "approved $id by the code its console showed ($code)"
}
