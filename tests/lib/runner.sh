# The test runner of the VM suites (sourced, after vm.sh: it uses now, elapsed and stop_qemu).
# The suite defines say and a function test_NAME per test, and sets WORK, JOBS, FILTER,
# BOOT_TIMEOUT and SUITE_START.
#
#   run_tests NAME...   runs each NAME that matches FILTER, up to JOBS at a time, each in its own
#                       subshell with NAME set and T=$WORK/t-NAME a fresh directory, its output in
#                       $WORK/t-NAME.out; as each ends prints that output indented, then
#                       "ok:   NAME (S s)" or "FAIL: NAME (S s)", and adds NAME to passed or failed
#   report_results      the suite time, the failed names, "N passed, N failed"; fails if any failed
#   abort_build WHAT    for a failure before any test ran: the same last line, then exit 1
#   fail WHY            inside a test: says why and shows the end of its serial log, ends the test

passed=() failed=()
declare -A PIDS=() STARTS=()

abort_build() {
    echo "FAIL build: $*"
    echo "0 passed, 1 failed"
    exit 1
}

fail() {
    echo "FAIL: $*"
    if [[ -f $T/serial.log ]]; then
        echo "   serial log $T/serial.log, last lines:"
        serial | tail -25 | sed 's/^/   | /'
    fi
    exit 1
}

run_one() { # NAME
    NAME=$1
    T=$WORK/t-$NAME
    rm -rf "$T" && mkdir -p "$T"
    trap 'stop_qemu' EXIT
    "test_$NAME"
}

finish() { # NAME RC
    local name=$1 rc=$2 secs
    secs=$(elapsed "${STARTS[$name]}")
    say "$name ($secs s)"
    sed 's/^/   /' "$WORK/t-$name.out"
    if ((rc == 0)); then
        echo "ok:   $name ($secs s)"
        passed+=("$name")
    else
        echo "FAIL: $name ($secs s)"
        failed+=("$name")
    fi
}

# Waits for any running test and reports it.
reap() {
    local done_pid= rc=0
    wait -n -p done_pid "${!PIDS[@]}" || rc=$?
    [[ -n $done_pid ]] || return 0
    local name=${PIDS[$done_pid]}
    unset "PIDS[$done_pid]"
    finish "$name" "$rc"
}

run_tests() { # NAME...
    local n selected=()
    for n in "$@"; do [[ $n =~ $FILTER ]] && selected+=("$n"); done
    say "${#selected[@]} tests, $JOBS at a time, boot timeout ${BOOT_TIMEOUT}s: ${selected[*]}"
    for n in "${selected[@]}"; do
        while ((${#PIDS[@]} >= JOBS)); do reap; done
        STARTS[$n]=$(now)
        (run_one "$n") >"$WORK/t-$n.out" 2>&1 &
        PIDS[$!]=$n
    done
    while ((${#PIDS[@]} > 0)); do reap; done
}

report_results() {
    echo "suite time: $(elapsed "$SUITE_START") s; work dir $WORK"
    ((${#failed[@]} == 0)) || echo "failed: ${failed[*]}"
    echo "${#passed[@]} passed, ${#failed[@]} failed"
    ((${#failed[@]} == 0))
}
