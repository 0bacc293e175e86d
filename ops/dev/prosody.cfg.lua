-- pubsub-cache: a self-contained, throwaway Prosody 0.12 for tests, development and the demo.
--
-- Never use it for a real server: no TLS, plaintext auth allowed, everything in memory but the
-- accounts. Start it through pubsub_cache.ops.dev.prosody.LocalProsody, or by hand:
--
--   PUBSUB_CACHE_PROSODY_DIR=/tmp/p PUBSUB_CACHE_PROSODY_PORT=5299 \
--   PUBSUB_CACHE_PROSODY_ADMINS=publisher@localhost prosody -F --config ops/dev/prosody.cfg.lua
--
-- Environment (read when the config is loaded, by prosody and prosodyctl alike):
--   PUBSUB_CACHE_PROSODY_DIR        required; data, pid file and log go here
--   PUBSUB_CACHE_PROSODY_PORT       c2s port on the loopback interface (default 5222)
--   PUBSUB_CACHE_PROSODY_INTERFACE  address to listen on (default 127.0.0.1)
--   PUBSUB_CACHE_PROSODY_DOMAIN     the VirtualHost (default localhost); the pubsub component
--                                   is "pubsub." .. domain
--   PUBSUB_CACHE_PROSODY_ADMINS     comma-separated bare JIDs of server admins (only admins may
--                                   create nodes on the pubsub component)
--   PUBSUB_CACHE_PROSODY_LOG_LEVEL  minimum log level (default info)
--   PUBSUB_CACHE_PROSODY_MAX_ITEMS  upper bound a node's max_items may be set to (default 256)
--   PUBSUB_CACHE_PROSODY_PUBSUB_STORAGE  store of pubsub and PEP data (default memory; "internal"
--                                   keeps nodes, items and subscriptions across restarts)
--
-- Facts measured on Prosody 0.12.3 (see DESIGN.md): Debian's stock config rate-limits c2s, the
-- default file store rewrites a whole node on every publish (hence "memory" for pubsub and PEP
-- data; accounts stay on disk so that `prosodyctl register` works), and Nagle's algorithm turns
-- a read of 20 items of ~3 kB from ~3 ms into ~44 ms on loopback (nagle = false below).

local dir = os.getenv("PUBSUB_CACHE_PROSODY_DIR")
if not dir or dir == "" then
	error("PUBSUB_CACHE_PROSODY_DIR must name the directory for data, pid file and log")
end
local port = tonumber(os.getenv("PUBSUB_CACHE_PROSODY_PORT") or "5222")
local interface = os.getenv("PUBSUB_CACHE_PROSODY_INTERFACE") or "127.0.0.1"
local domain = os.getenv("PUBSUB_CACHE_PROSODY_DOMAIN") or "localhost"
local log_level = os.getenv("PUBSUB_CACHE_PROSODY_LOG_LEVEL") or "info"
local max_items = tonumber(os.getenv("PUBSUB_CACHE_PROSODY_MAX_ITEMS") or "256")
local pubsub_storage = os.getenv("PUBSUB_CACHE_PROSODY_PUBSUB_STORAGE") or "memory"
local admin_jids = {}
for jid in (os.getenv("PUBSUB_CACHE_PROSODY_ADMINS") or ""):gmatch("[^,%s]+") do
	admin_jids[#admin_jids + 1] = jid
end

-- Process ----------------------------------------------------------------------------------
run_as_root = true -- tests and CI run as root; nothing here is exposed beyond loopback
pidfile = dir .. "/prosody.pid"
data_path = dir .. "/data"
log = {
	{ levels = { min = log_level }, to = "file", filename = dir .. "/prosody.log" },
}
admins = admin_jids
certificates = dir -- no certificates; pointing here silences the certs directory error

-- Network: c2s on loopback only, no s2s, no HTTP -------------------------------------------
interfaces = { interface }
local_interfaces = { interface }
c2s_interfaces = { interface }
c2s_ports = { port }
s2s_ports = {}
http_ports = {}
https_ports = {}
network_settings = { nagle = false }

-- No TLS: plaintext connections and SASL without TLS are allowed (loopback only) ------------
c2s_require_encryption = false
s2s_require_encryption = false
allow_unencrypted_plain_auth = true
authentication = "internal_hashed"

-- Storage: accounts (and rosters) on disk; pubsub and PEP data in memory (by default) ------
default_storage = "internal"
-- The memory store refuses items beyond this many per node ("quota-limit"), 1000 by default.
storage_archive_item_limit = math.max(1000, max_items)
storage = {
	pubsub_nodes = pubsub_storage,
	pubsub_data = pubsub_storage,
	pep = pubsub_storage,
	pep_data = pubsub_storage,
}

modules_enabled = {
	"roster",
	"saslauth",
	"disco",
	"ping",
	"pep",
	"carbons",
}
-- s2s is loaded automatically by Prosody; this server never talks to other servers.
-- No mod_limits: nothing is rate-limited.
modules_disabled = { "s2s", "s2s_auth_certs" }

pep_max_items = max_items

VirtualHost(domain)

Component("pubsub." .. domain) "pubsub"
	storage = pubsub_storage
	expose_publisher = true -- items carry the publisher attribute
	pubsub_max_items = max_items
