# Helpers for the benchmark scripts that run a 3-replica master group on this host (sourced by
# scripts/bench-failover-at-scale and scripts/bench-million).
#
# The caller sets: B (the binaries' directory), work (a scratch directory), pids (an array that
# its EXIT trap kills), replica_args (an array of extra borgmaster flags; may be empty), and
# declares `declare -A api http pid` before sourcing this file.
#
# Auth: with TLS=1 in the environment, cell_credentials makes a CA and credentials under
# $work (a replica certificate per replica, an admin certificate for borgctl and one for the
# hollow Borglets, which register machines of many names) and every daemon and borgctl run
# with mutual TLS; otherwise they all run --insecure. $borglet_auth holds the Borglet's flags.

port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# group_addresses: picks the replicas' API and HTTP addresses; sets api[1..3], http[1..3],
# peers (borgmaster's --peers) and all (the three API addresses, for borgctl --master).
group_addresses() {
    peers=""
    for i in 1 2 3; do api[$i]=127.0.0.1:$(port); http[$i]=127.0.0.1:$(port); peers+="${peers:+,}$i=${api[$i]}"; done
    all="${api[1]},${api[2]},${api[3]}"
}

# cell_credentials: with TLS=1, the CA and every credential (see the top); sets auth_mode
# (tls or insecure, for the CSV lines) and borglet_auth.
cell_credentials() {
    if [ "${TLS:-0}" = 1 ]; then
        auth_mode=tls
        "$B/borgctl" certs init --ca "$work/ca" --cell bench >/dev/null
        for i in 1 2 3; do
            "$B/borgctl" certs issue --ca "$work/ca" --role replica --name "$i" --out "$work/m$i/credentials" >/dev/null
        done
        "$B/borgctl" certs issue --ca "$work/ca" --role admin --name hollow --out "$work/hollow/credentials" >/dev/null
        "$B/borgctl" certs issue --ca "$work/ca" --role admin --name bench --out "$work/credentials" >/dev/null
        export BORG_CREDENTIALS=$work/credentials
        borglet_auth=(--credentials "$work/hollow/credentials")
    else
        auth_mode=insecure
        export BORG_CREDENTIALS=
        borglet_auth=(--insecure)
    fi
}

# start ID: starts replica ID (fsync on, mutual TLS with TLS=1 else --insecure, unlimited quota,
# plus replica_args); its stdout and stderr go to $work/mID.out and $work/mID.log.
start() {
    local i=$1 auth=(--insecure)
    [ "${auth_mode:-insecure}" = tls ] && auth=(--credentials "$work/m$i/credentials")
    "$B/borgmaster" --id "$i" --peers "$peers" --listen "${api[$i]}" --http "${http[$i]}" \
        "${auth[@]}" --data-dir "$work/m$i" --default-quota unlimited "${replica_args[@]}" \
        >>"$work/m$i.out" 2>>"$work/m$i.log" &
    pid[$i]=$!; pids+=($!)
}

ctl() {
    if [ "${auth_mode:-insecure}" = tls ]; then "$B/borgctl" --master "$1" "${@:2}"
    else "$B/borgctl" --insecure --master "$1" "${@:2}"; fi
}

# leader ADDRS: prints the leader's replica id as the replicas in ADDRS see it (nothing when none
# answers yet: a replica that does not answer prints nothing, not a traceback).
leader() {
    ctl "$1" replicas -o json 2>/dev/null | python3 -c '
import json, sys
try:
    rs = json.load(sys.stdin)
except ValueError:
    rs = []
print(next((r["id"] for r in rs if r["role"] == "leader"), ""))' || true
}

# wait_leader ADDRS: prints the leader's id once there is one (exits after 10 s without).
wait_leader() {
    local l
    for _ in $(seq 200); do l=$(leader "$1"); [ -n "$l" ] && { echo "$l"; return; }; sleep 0.05; done
    echo "no leader" >&2; exit 1
}

# running HTTP-ADDR: the tasks running, from that replica's own metrics.
running() {
    curl -s "http://$1/metrics" | awk '/^borg_tasks\{/ && /state="running"/ { s += $2 } END { print s + 0 }'
}

# pass_stats HTTP: "PASSES MEAN_MS" from one scrape of the replica at HTTP: the scheduling passes
# it ran as leader and their mean wall time, snapshot to commit
# (borg_scheduling_pass_duration_seconds count and sum).
pass_stats() {
    curl -s "http://$1/metrics" | awk '$1 == "borg_scheduling_pass_duration_seconds_count" { c = $2 }
        $1 == "borg_scheduling_pass_duration_seconds_sum" { s = $2 }
        END { if (c > 0) printf "%d %.1f\n", c, s * 1000 / c; else print "0 NA" }'
}

# poll_counters HTTP: "SCHEDULED POLLS OVERRUNS WHOLE DELTA LISTED USAGE" from one scrape of the
# replica at HTTP: the tasks it has seen placed (borg_task_transitions_total{kind="scheduled"}),
# the polls it sent as leader (borg_link_poll_duration_seconds_count), how many of them ended
# after their machine's next poll was due (borg_link_poll_overruns_total: a full round fits in
# the poll interval while no poll overruns), the desired sets it sent whole and as deltas
# (borg_link_poll_sets_total{sent}), and the answers that listed every task's status and that
# brought the tasks' usage alone (borg_link_poll_answers_total{tasks="listed"|"usage"}).
poll_counters() {
    curl -s "http://$1/metrics" | awk '/^borg_task_transitions_total\{/ && /kind="scheduled"/ { s += $2 }
        $1 == "borg_link_poll_duration_seconds_count" { p = $2 }
        $1 == "borg_link_poll_overruns_total" { o = $2 }
        $1 == "borg_link_poll_sets_total{sent=\"whole\"}" { w = $2 }
        $1 == "borg_link_poll_sets_total{sent=\"delta\"}" { d = $2 }
        $1 == "borg_link_poll_answers_total{tasks=\"listed\"}" { l = $2 }
        $1 == "borg_link_poll_answers_total{tasks=\"usage\"}" { u = $2 }
        END { printf "%d %d %d %d %d %d %d\n", s, p, o, w, d, l, u }'
}

# cpu_s PID: the CPU time (user + system, seconds, two decimals) process PID has used so far.
cpu_s() {
    awk -v hz="$(getconf CLK_TCK)" '{ sub(/^.*\) /, ""); printf "%.2f\n", ($12 + $13) / hz }' "/proc/$1/stat" 2>/dev/null || echo NA
}

# machines_in STATE ADDRS: how many machines are in STATE (up, down, draining...).
machines_in() { (ctl "$2" machines -o json | grep -o "\"$1\"" || true) | wc -l; }

# wait_caught_up ID: waits (up to 5 min) until replica ID answers and the three replicas' applied
# indexes are within one entry of each other.
wait_caught_up() {
    for _ in $(seq 600); do
        ctl "${api[$1]}" replicas -o json 2>/dev/null | python3 -c '
import json, sys
try:
    rs = json.load(sys.stdin)
except ValueError:
    sys.exit(1)
me = [r for r in rs if r["role"] in ("follower", "leader")]
sys.exit(0 if len(me) == 3 and len({r["last_applied_index"] for r in me}) <= 2 else 1)' && return
        sleep 0.5
    done
}

# first_round_ms HTTP-ADDR: the new leader's borg_leader_first_poll_round_seconds in ms (NA when
# it did not report one within about 120 s). Asks every 0.5 s, as a scraper would: a render of
# /metrics sums every task under the state's locks, and at 1,000,000 tasks renders back to
# back (it asked every 50 ms) slowed the very poll round they measure.
first_round_ms() {
    local first=""
    for _ in $(seq 240); do
        first=$(curl -s "http://$1/metrics" | awk '$1 == "borg_leader_first_poll_round_seconds" { print $2 }')
        [ -n "$first" ] && break; sleep 0.5
    done
    python3 -c "v='${first:-}'; print(round(float(v) * 1000) if v and v != 'NaN' else 'NA')" 2>/dev/null || echo NA
}

rss_mb() { awk '/VmRSS/ { print int($2 / 1024) }' "/proc/$1/status" 2>/dev/null || echo NA; }
hwm_mb() { awk '/VmHWM/ { print int($2 / 1024) }' "/proc/$1/status" 2>/dev/null || echo NA; }

# poll_age_ms API HTTP: the oldest up machine's last poll answer, in ms, as the worst of 10
# samples over 5 s (one full poll round must fit in the poll interval, 1 s by default), two ways:
# "GAUGE LISTED". GAUGE is the leader's borg_link_oldest_poll_age_seconds, computed as it is
# scraped; LISTED is now minus the oldest last_seen_ms in `borgctl machines`, which also counts
# how long that listing of every machine took to build and arrive. API and HTTP must be the
# leader's: the last poll answers are its soft state (a follower has none).
poll_age_ms() {
    local worst=0 listed=0 a l
    for _ in $(seq 10); do
        a=$(curl -s "http://$2/metrics" | awk '$1 == "borg_link_oldest_poll_age_seconds" { printf "%d", $2 * 1000 }')
        l=$(ctl "$1" machines -o json | python3 -c '
import json, sys, time
ms = [m["last_seen_ms"] for m in json.load(sys.stdin) if m["state"] == "up"]
print(int(time.time() * 1000 - min(ms)) if ms else 0)')
        [ "${a:-0}" -gt "$worst" ] && worst=$a
        [ "$l" -gt "$listed" ] && listed=$l
        sleep 0.5
    done
    echo "$worst $listed"
}

# snapshot_rejoin L [F]: the leader L's snapshot of the whole cell, and follower F (default the
# lowest other than L; may already be dead) that lost its disk rejoining from it: L takes a
# snapshot (`borgctl replicas snapshot`), F is removed, killed, its data dir wiped (its
# credentials kept), started again and added back (a replica restarted with an empty data dir
# may not rejoin as the voter it was). Sets snapshot_csv to one CSV line: snapshot bytes, the
# index it covers, add -> caught up as a voter (ms), and whether the follower caught up from the
# log or from the snapshot. Leaves the group at three voters. Call it in the script's own shell,
# not in $(...): the replica it starts must join pid and pids, or the cleanup trap misses it.
snapshot_rejoin() {
    local l=$1 f=${2:-1} size index t0 add_ms how=log
    [ "$f" = "$l" ] && f=2
    ctl "${api[$l]}" replicas snapshot >/dev/null
    size=$( (grep -ho 'snapshot taken.*' "$work/m$l.log" || true) | sed -n 's/.*bytes=\([0-9]*\).*/\1/p' | tail -1)
    index=$( (grep -ho 'snapshot taken on request.*' "$work/m$l.log" || true) | sed -n 's/.*index=\([0-9]*\).*/\1/p' | tail -1)
    ctl "${api[$l]}" replicas remove "$f" >/dev/null
    kill -9 "${pid[$f]}" 2>/dev/null || true; wait "${pid[$f]}" 2>/dev/null || true
    find "$work/m$f" -mindepth 1 -maxdepth 1 ! -name credentials -exec rm -rf {} +
    : >"$work/m$f.log"; : >"$work/m$f.out"
    start "$f"
    for _ in $(seq 400); do grep -q "listening on" "$work/m$f.out" && break; sleep 0.05; done
    t0=$(date +%s%N)
    ctl "${api[$l]}" replicas add "$f" "${api[$f]}" >/dev/null   # returns once it caught up, as a voter
    add_ms=$(( ($(date +%s%N) - t0) / 1000000 ))
    grep -q "installed a snapshot from the leader" "$work/m$f.log" && how=snapshot
    snapshot_csv="${size:-NA},${index:-NA},$add_ms,$how"
}
