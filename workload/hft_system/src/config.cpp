#include "config.hpp"

#include <arpa/inet.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <cstring>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <regex>
#include <set>
#include <sstream>

namespace hft {
namespace fs = std::filesystem;

namespace {

std::string describe(const json& v) {
  if (v.is_string()) return "string \"" + v.get<std::string>() + "\"";
  return std::string(v.type_name()) + " " + v.dump();
}

// Reads the fields of one JSON object, remembering which keys were read so that any
// other key is reported as unknown. `path` is the dotted prefix used in messages.
class Fields {
 public:
  Fields(const json& j, std::string path) : j_(j), path_(std::move(path)) {
    if (!j.is_object())
      throw ConfigError(where() + " must be an object, got " + std::string(j.type_name()));
  }

  std::string key(const std::string& k) const { return path_.empty() ? k : path_ + "." + k; }

  const json* find(const std::string& k) {
    seen_.insert(k);
    auto it = j_.find(k);
    return it == j_.end() ? nullptr : &*it;
  }

  const json& require(const std::string& k) {
    const json* v = find(k);
    if (!v) throw ConfigError("missing required key '" + key(k) + "'");
    return *v;
  }

  std::string str(const std::string& k, const std::string* def = nullptr) {
    const json* v = def ? find(k) : &require(k);
    if (!v) return *def;
    if (!v->is_string()) throw ConfigError("'" + key(k) + "' must be a string, got " + describe(*v));
    std::string s = v->get<std::string>();
    if (s.empty()) throw ConfigError("'" + key(k) + "' must not be empty");
    return s;
  }

  std::string one_of(const std::string& k, const std::vector<std::string>& allowed) {
    std::string s = str(k);
    if (std::find(allowed.begin(), allowed.end(), s) == allowed.end()) {
      std::string list;
      for (const auto& a : allowed) list += (list.empty() ? "" : ", ") + a;
      throw ConfigError("'" + key(k) + "' must be one of " + list + ", got \"" + s + "\"");
    }
    return s;
  }

  bool boolean(const std::string& k, const bool* def = nullptr) {
    const json* v = def ? find(k) : &require(k);
    if (!v) return *def;
    if (!v->is_boolean())
      throw ConfigError("'" + key(k) + "' must be a boolean (true or false), got " + describe(*v));
    return v->get<bool>();
  }

  int integer(const std::string& k, int lo, int hi, const int* def = nullptr) {
    const json* v = def ? find(k) : &require(k);
    if (!v) return *def;
    if (!v->is_number_integer())
      throw ConfigError("'" + key(k) + "' must be an integer, got " + describe(*v));
    long long n = v->get<long long>();
    if (n < lo || n > hi)
      throw ConfigError("'" + key(k) + "' must be between " + std::to_string(lo) + " and " +
                        std::to_string(hi) + ", got " + std::to_string(n));
    return static_cast<int>(n);
  }

  double positive_number(const std::string& k) {
    const json& v = require(k);
    if (!v.is_number()) throw ConfigError("'" + key(k) + "' must be a number, got " + describe(v));
    double d = v.get<double>();
    if (!(d > 0) || !std::isfinite(d))
      throw ConfigError("'" + key(k) + "' must be greater than 0, got " + v.dump());
    return d;
  }

  // Rejects a key with a specific explanation (used for secrets).
  void forbid(const std::string& k, const std::string& why) {
    seen_.insert(k);
    if (j_.contains(k)) throw ConfigError("'" + key(k) + "' is not allowed: " + why);
  }

  void no_unknown_keys() const {
    for (const auto& item : j_.items())
      if (!seen_.count(item.key())) throw ConfigError("unknown key '" + key(item.key()) + "'");
  }

 private:
  std::string where() const { return path_.empty() ? "the configuration" : "'" + path_ + "'"; }
  const json& j_;
  std::string path_;
  std::set<std::string> seen_;
};

json read_json_file(const std::string& path) {
  std::ifstream in(path);
  if (!in) throw ConfigError("cannot read " + path + ": " + std::strerror(errno));
  std::stringstream ss;
  ss << in.rdbuf();
  try {
    return json::parse(ss.str());
  } catch (const json::parse_error& e) {
    throw ConfigError("invalid JSON in " + path + ": " + e.what());
  }
}

std::string resolve(const std::string& base_dir, const std::string& p) {
  if (p.empty() || p[0] == '/') return p;
  return (fs::path(base_dir) / p).lexically_normal().string();
}

StrategyConfig parse_strategy(const json& j, const std::string& path, const Config& cfg) {
  Fields f(j, path);
  StrategyConfig s;
  s.id = f.str("id");
  static const std::regex id_re("[A-Za-z0-9_.-]{1,64}");
  if (!std::regex_match(s.id, id_re))
    throw ConfigError("'" + f.key("id") + "' must be 1-64 characters of A-Z a-z 0-9 _ . -, got \"" +
                      s.id + "\"");
  s.name = f.str("name", &s.id);
  s.symbol = f.str("symbol");
  s.exchange = f.str("exchange");
  if (!cfg.has_exchange(s.exchange)) {
    std::string list;
    for (const auto& e : cfg.exchanges) list += (list.empty() ? "" : ", ") + e.name;
    throw ConfigError("'" + f.key("exchange") + "' must name a configured exchange (" + list +
                      "), got \"" + s.exchange + "\"");
  }
  bool no = false;
  s.paper_trading = f.boolean("paper_trading", &no);
  s.max_position = f.positive_number("max_position");
  s.autostart = f.boolean("autostart", &no);
  f.no_unknown_keys();
  return s;
}

}  // namespace

json StrategyConfig::to_json() const {
  return {{"id", id},
          {"name", name},
          {"symbol", symbol},
          {"exchange", exchange},
          {"paper_trading", paper_trading},
          {"max_position", max_position},
          {"autostart", autostart}};
}

bool Config::has_exchange(const std::string& name) const {
  for (const auto& e : exchanges)
    if (e.name == name) return true;
  return false;
}

static std::string default_node_id() {
  char buf[256] = {0};
  if (gethostname(buf, sizeof buf - 1) != 0 || !buf[0]) return "localhost";
  return buf;
}

static bool is_ip_literal(const std::string& s) {
  unsigned char buf[sizeof(struct in6_addr)];
  return inet_pton(AF_INET, s.c_str(), buf) == 1 || inet_pton(AF_INET6, s.c_str(), buf) == 1;
}

json Config::to_json() const {
  json ex = json::array();
  for (const auto& e : exchanges) ex.push_back({{"name", e.name}, {"enabled", e.enabled}});
  json st = json::array();
  for (const auto& s : strategies) st.push_back(s.to_json());
  json j = {{"role", role},
            {"trading_enabled", trading_enabled},
            {"node_id", node_id},
            {"lease", {{"ttl_ms", lease.ttl_ms}, {"renew_interval_ms", lease.renew_interval_ms}}},
            {"api", {{"bind", api_bind}, {"port", api_port}}},
            {"log_dir", log_dir},
            {"database",
             {{"host", database.host},
              {"port", database.port},
              {"name", database.name},
              {"user", database.user},
              {"connect_timeout_seconds", database.connect_timeout_seconds}}},
            {"exchanges", ex},
            {"strategies", st},
            {"shutdown_timeout_seconds", shutdown_timeout_seconds},
            {"tick_interval_ms", tick_interval_ms}};
  if (!strategies_dir.empty()) j["strategies_dir"] = strategies_dir;
  return j;
}

Config load_config_file(const std::string& path) {
  json j = read_json_file(path);
  std::string base = fs::absolute(path).parent_path().string();
  Fields f(j, "");
  Config c;
  c.role = f.one_of("role", {"primary", "standby"});
  c.trading_enabled = f.boolean("trading_enabled");
  std::string host = default_node_id();
  c.node_id = f.str("node_id", &host);
  static const std::regex node_re("[A-Za-z0-9_.:-]{1,128}");
  if (!std::regex_match(c.node_id, node_re))
    throw ConfigError("'node_id' must be 1-128 characters of A-Z a-z 0-9 _ . : -, got \"" +
                      c.node_id + "\"");
  if (const json* lease = f.find("lease")) {
    Fields l(*lease, "lease");
    c.lease.ttl_ms = l.integer("ttl_ms", 200, 600000, &c.lease.ttl_ms);
    c.lease.renew_interval_ms =
        l.integer("renew_interval_ms", 50, 300000, &c.lease.renew_interval_ms);
    l.no_unknown_keys();
    if (c.lease.renew_interval_ms * 2 > c.lease.ttl_ms)
      throw ConfigError("'lease.renew_interval_ms' must be at most half of 'lease.ttl_ms' (" +
                        std::to_string(c.lease.ttl_ms) + "), got " +
                        std::to_string(c.lease.renew_interval_ms));
  }

  if (const json* api = f.find("api")) {
    Fields a(*api, "api");
    c.api_bind = a.str("bind", &c.api_bind);
    if (!is_ip_literal(c.api_bind))
      throw ConfigError("'api.bind' must be an IP address literal (e.g. 127.0.0.1 or ::1), got \"" +
                        c.api_bind + "\"");
    c.api_port = a.integer("port", 1, 65535, &c.api_port);
    a.no_unknown_keys();
  }
  c.log_dir = resolve(base, f.str("log_dir", &c.log_dir));

  Fields d(f.require("database"), "database");
  c.database.host = d.str("host");
  c.database.port = d.integer("port", 1, 65535, &c.database.port);
  c.database.name = d.str("name");
  c.database.user = d.str("user");
  c.database.connect_timeout_seconds =
      d.integer("connect_timeout_seconds", 1, 300, &c.database.connect_timeout_seconds);
  d.forbid("password", "the database password comes only from the environment variable DB_PASSWORD");
  d.no_unknown_keys();

  const json& ex = f.require("exchanges");
  if (!ex.is_array() || ex.empty())
    throw ConfigError("'exchanges' must be a non-empty array, got " + describe(ex));
  static const std::regex name_re("[a-z0-9_-]{1,32}");
  for (size_t i = 0; i < ex.size(); ++i) {
    std::string p = "exchanges[" + std::to_string(i) + "]";
    Fields e(ex[i], p);
    ExchangeConfig x;
    x.name = e.str("name");
    if (!std::regex_match(x.name, name_re))
      throw ConfigError("'" + e.key("name") + "' must be 1-32 characters of a-z 0-9 _ -, got \"" +
                        x.name + "\"");
    if (c.has_exchange(x.name))
      throw ConfigError("'" + e.key("name") + "' duplicates exchange \"" + x.name + "\"");
    bool yes = true;
    x.enabled = e.boolean("enabled", &yes);
    std::string env = exchange_env_prefix(x.name);
    e.forbid("api_key", "exchange keys come only from the environment variable " + env + "_API_KEY");
    e.forbid("api_secret",
             "exchange secrets come only from the environment variable " + env + "_API_SECRET");
    e.no_unknown_keys();
    c.exchanges.push_back(x);
  }

  std::set<std::string> ids;
  auto add = [&](StrategyConfig s, const std::string& where) {
    if (!ids.insert(s.id).second)
      throw ConfigError(where + ": strategy id \"" + s.id + "\" is defined twice");
    c.strategies.push_back(std::move(s));
  };
  if (const json* st = f.find("strategies")) {
    if (!st->is_array()) throw ConfigError("'strategies' must be an array, got " + describe(*st));
    for (size_t i = 0; i < st->size(); ++i) {
      std::string p = "strategies[" + std::to_string(i) + "]";
      add(parse_strategy((*st)[i], p, c), p);
    }
  }
  std::string none;
  c.strategies_dir = resolve(base, f.str("strategies_dir", &none));
  if (!c.strategies_dir.empty()) {
    if (!fs::is_directory(c.strategies_dir))
      throw ConfigError("'strategies_dir' is not a directory: " + c.strategies_dir);
    std::vector<std::string> files;
    for (const auto& entry : fs::directory_iterator(c.strategies_dir))
      if (entry.path().extension() == ".json") files.push_back(entry.path().string());
    std::sort(files.begin(), files.end());
    for (const auto& file : files) add(load_strategy_file(file, c), file);
  }

  c.shutdown_timeout_seconds =
      f.integer("shutdown_timeout_seconds", 1, 600, &c.shutdown_timeout_seconds);
  c.tick_interval_ms = f.integer("tick_interval_ms", 10, 60000, &c.tick_interval_ms);
  f.no_unknown_keys();
  return c;
}

StrategyConfig load_strategy_file(const std::string& path, const Config& cfg) {
  json j = read_json_file(path);
  try {
    return parse_strategy(j, "", cfg);
  } catch (const ConfigError& e) {
    throw ConfigError(path + ": " + e.what());
  }
}

namespace {

// The restart-only keys and how to tell whether one differs: the single source of truth.
struct RestartKey {
  const char* key;
  bool (*differs)(const Config&, const Config&);
};

bool exchanges_differ(const Config& a, const Config& b) {
  if (a.exchanges.size() != b.exchanges.size()) return true;
  for (size_t i = 0; i < a.exchanges.size(); ++i)
    if (a.exchanges[i].name != b.exchanges[i].name ||
        a.exchanges[i].enabled != b.exchanges[i].enabled)
      return true;
  return false;
}

const RestartKey kRestartKeys[] = {
    {"node_id", [](const Config& a, const Config& b) { return a.node_id != b.node_id; }},
    {"lease.ttl_ms", [](const Config& a, const Config& b) { return a.lease.ttl_ms != b.lease.ttl_ms; }},
    {"lease.renew_interval_ms",
     [](const Config& a, const Config& b) {
       return a.lease.renew_interval_ms != b.lease.renew_interval_ms;
     }},
    {"api.bind", [](const Config& a, const Config& b) { return a.api_bind != b.api_bind; }},
    {"api.port", [](const Config& a, const Config& b) { return a.api_port != b.api_port; }},
    {"log_dir", [](const Config& a, const Config& b) { return a.log_dir != b.log_dir; }},
    {"database.host",
     [](const Config& a, const Config& b) { return a.database.host != b.database.host; }},
    {"database.port",
     [](const Config& a, const Config& b) { return a.database.port != b.database.port; }},
    {"database.name",
     [](const Config& a, const Config& b) { return a.database.name != b.database.name; }},
    {"database.user",
     [](const Config& a, const Config& b) { return a.database.user != b.database.user; }},
    {"database.connect_timeout_seconds",
     [](const Config& a, const Config& b) {
       return a.database.connect_timeout_seconds != b.database.connect_timeout_seconds;
     }},
    {"exchanges", exchanges_differ},
};

}  // namespace

const std::vector<std::string>& restart_only_keys() {
  static const std::vector<std::string> keys = [] {
    std::vector<std::string> k;
    for (const auto& rk : kRestartKeys) k.push_back(rk.key);
    return k;
  }();
  return keys;
}

std::vector<std::string> restart_only_changes(const Config& a, const Config& b) {
  std::vector<std::string> keys;
  for (const auto& rk : kRestartKeys)
    if (rk.differs(a, b)) keys.push_back(rk.key);
  return keys;
}

std::string exchange_env_prefix(const std::string& exchange) {
  std::string s;
  for (char ch : exchange) s += std::isalnum(static_cast<unsigned char>(ch)) ? std::toupper(ch) : '_';
  return s;
}

}  // namespace hft
