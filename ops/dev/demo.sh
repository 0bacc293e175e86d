#!/usr/bin/env bash
# The main job, end to end, on a throwaway setup (everything lives in a temporary directory):
#   1. a local Prosody with two accounts: juliet (who blogs) and romeo (whose view is cached),
#      contacts of each other, so that Juliet's XEP-0277 microblog (PEP) reaches Romeo;
#   2. `pubsub-cache run` as romeo on an SQLite file, in the background (JSON logs to a file);
#   3. Juliet publishes a few posts; the daemon is notified, syncs her blog node and projects it;
#   4. the posts are shown from the cache, then everything is stopped.
# Set-up on a fresh machine is the test command's (ops/dev/setup.sh). Takes a few seconds.
set -euo pipefail
cd "$(dirname "$0")/../.."

# shellcheck source=ops/dev/setup.sh
source ops/dev/setup.sh
log "Python environment (.venv) and Prosody"
setup_venv
setup_prosody

work=$(mktemp -d "${TMPDIR:-/tmp}/pubsub-cache-demo.XXXXXX")
prosody_pid="" daemon_pid=""
cleanup() {
    [ -n "$daemon_pid" ] && kill "$daemon_pid" 2>/dev/null && wait "$daemon_pid" 2>/dev/null
    [ -n "$prosody_pid" ] && kill "$prosody_pid" 2>/dev/null && wait "$prosody_pid" 2>/dev/null
    rm -rf "$work"
}
trap cleanup EXIT
python=.venv/bin/python
cli=.venv/bin/pubsub-cache

log "Local Prosody (in $work)"
port=$($python -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
export PUBSUB_CACHE_PROSODY_DIR="$work/prosody" PUBSUB_CACHE_PROSODY_PORT="$port"
config=ops/dev/prosody.cfg.lua
mkdir -p "$PUBSUB_CACHE_PROSODY_DIR"
prosody -F --config "$config" >"$work/prosody/console.log" 2>&1 &
prosody_pid=$!
for user in juliet romeo; do
    prosodyctl --config "$config" register "$user" localhost "$user-secret"
done
for _ in $(seq 100); do
    (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break
    sleep 0.05
done
echo "Prosody on 127.0.0.1:$port, accounts juliet@localhost and romeo@localhost"

# The settings of the daemon (and of every pubsub-cache command below).
export PUBSUB_CACHE_DATABASE_URL="sqlite:///$work/cache.sqlite3"
export PUBSUB_CACHE_JID=romeo@localhost PUBSUB_CACHE_PASSWORD=romeo-secret
export PUBSUB_CACHE_XMPP_HOST=127.0.0.1 PUBSUB_CACHE_XMPP_PORT="$port" PUBSUB_CACHE_XMPP_TLS=none

# Small XMPP steps as Juliet, with the project's own client (python - STEP).
juliet() {
    $python - "$@" <<'PY'
import os, sys
import anyio
from pubsub_cache.xmpp.client import session

PORT = int(os.environ["PUBSUB_CACHE_XMPP_PORT"])
POSTS = [
    ("balcony", "But soft!", "What light through yonder window breaks?"),
    ("names", "What's in a name?", "That which we call a rose by any other word would smell as sweet."),
    ("parting", "Good night, good night!", "Parting is such sweet sorrow."),
]


def connect(user: str):
    return session(f"{user}@localhost/demo", f"{user}-secret", host="127.0.0.1", port=PORT, tls="none")


async def befriend() -> None:
    # PEP notifications go to contacts: a mutual presence subscription (slixmpp accepts and
    # subscribes back by itself; Prosody only hands requests to sessions that read their roster).
    async with connect("juliet") as juliet, connect("romeo") as romeo:
        # A PEP node keeps 1 item unless told otherwise (Prosody); a blog keeps more.
        await juliet.create_node(juliet.jid, "urn:xmpp:microblog:0", {"max_items": 100})
        for client in (juliet, romeo):
            await client.xmpp.get_roster()
        juliet.xmpp.send_presence_subscription(pto="romeo@localhost")
        with anyio.fail_after(10):
            while juliet.xmpp.client_roster["romeo@localhost"]["subscription"] != "both":
                await anyio.sleep(0.05)


async def publish() -> None:
    async with connect("juliet") as juliet:
        for minute, (item_id, title, text) in enumerate(POSTS):
            entry = (
                f"<entry xmlns='http://www.w3.org/2005/Atom'><title>{title}</title>"
                f"<content>{text}</content><author><name>Juliet</name></author>"
                f"<published>2026-07-14T21:{minute:02}:00Z</published></entry>"
            )
            await juliet.publish_pep("urn:xmpp:microblog:0", item_id, entry)
            print(f"juliet published {item_id!r}: {title}")


anyio.run({"befriend": befriend, "publish": publish}[sys.argv[1]], backend="asyncio")
PY
}

# Wait until the read model holds N items of Juliet's blog (python - N).
wait_for_posts() {
    $python - "$1" <<'PY'
import os, sys, time
import sqlalchemy as sa
from pubsub_cache.events.db import create_engine
from pubsub_cache.projector.schema import pubsub_item, pubsub_node

engine = create_engine(os.environ["PUBSUB_CACHE_DATABASE_URL"])
query = (
    sa.select(sa.func.count()).select_from(pubsub_item.join(pubsub_node))
    .where(pubsub_node.c.service == "juliet@localhost", pubsub_node.c.node == "urn:xmpp:microblog:0")
)
deadline = time.monotonic() + 20
while True:
    try:
        with engine.connect() as connection:
            count = connection.execute(query).scalar_one()
    except sa.exc.OperationalError:
        count = 0  # the daemon has not created the tables yet
    if count >= int(sys.argv[1]):
        break
    if time.monotonic() > deadline:
        sys.exit(f"only {count} of {sys.argv[1]} posts reached the cache in 20 s")
    time.sleep(0.05)
PY
}

log "Juliet and Romeo become contacts"
juliet befriend

log "pubsub-cache run (as romeo, on $PUBSUB_CACHE_DATABASE_URL; logs in $work/daemon.log)"
$cli run 2>"$work/daemon.log" &
daemon_pid=$!
for _ in $(seq 200); do
    grep -q '"ingest of romeo@localhost running"' "$work/daemon.log" && break
    kill -0 "$daemon_pid" 2>/dev/null || { cat "$work/daemon.log" >&2; exit 1; }
    sleep 0.05
done

log "Juliet blogs"
juliet publish
if ! wait_for_posts 3; then
    tail -n 20 "$work/daemon.log" >&2
    exit 1
fi

log "Served from the cache"
if $cli get --help >/dev/null 2>&1; then
    $cli get juliet@localhost urn:xmpp:microblog:0
else
    # Until `pubsub-cache get` exists: the cache's state, and the rows themselves.
    $cli status
    $python - <<'PY'
import os
import sqlalchemy as sa
from pubsub_cache.events.db import create_engine
from pubsub_cache.projector.schema import pubsub_item, pubsub_node

engine = create_engine(os.environ["PUBSUB_CACHE_DATABASE_URL"])
query = (
    sa.select(pubsub_node.c.sync_state, pubsub_item.c.item_id, pubsub_item.c.parsed)
    .select_from(pubsub_item.join(pubsub_node))
    .where(pubsub_node.c.service == "juliet@localhost")
    .order_by(pubsub_item.c.published_at)
)
with engine.connect() as connection:
    for state, item_id, parsed in connection.execute(query):
        print(f"[{state}] {item_id}: {parsed.get('title')!r} {parsed.get('content')!r}")
PY
fi

log "Stopping the daemon (SIGTERM) and Prosody"
kill -TERM "$daemon_pid"
status=0
wait "$daemon_pid" || status=$?
daemon_pid=""
if [ "$status" != 0 ]; then
    echo "the daemon exited with status $status" >&2
    tail -n 20 "$work/daemon.log" >&2
    exit 1
fi
grep -c . "$work/daemon.log" | xargs printf 'daemon stopped cleanly (%s log lines)\n'
