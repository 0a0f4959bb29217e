#include "engine.hpp"

#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>

#include "log.hpp"
#include "metrics.hpp"

namespace hft {
namespace {

constexpr size_t kSignalWindow = 10;     // ticks in the moving average
constexpr double kSignalThreshold = 3e-4;  // relative distance from the average to trade

std::string fmt(double v) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.10f", v);
  return buf;
}

std::string pg_bool(bool b) { return b ? "true" : "false"; }

// Applies a fill to a (quantity, average price) book; returns the realised P&L and sets
// *closed to the quantity that reduced an existing position.
double apply_fill(double& qty, double& avg, const std::string& side, double q, double price,
                  double* closed) {
  double signed_q = side == "buy" ? q : -q;
  *closed = 0;
  if (std::fabs(qty) < 1e-12 || (qty > 0) == (signed_q > 0)) {
    avg = (avg * std::fabs(qty) + price * q) / (std::fabs(qty) + q);
    qty += signed_q;
    return 0;
  }
  *closed = std::min(std::fabs(qty), q);
  double realised = *closed * (price - avg) * (qty > 0 ? 1 : -1);
  double before = qty;
  qty += signed_q;
  if (std::fabs(qty) < 1e-12) {
    qty = 0;
    avg = 0;
  } else if ((before > 0) != (qty > 0)) {
    avg = price;  // flipped: the remainder opened at this price
  }
  return realised;
}

Reply error_reply(int status, const std::string& message) {
  return {status, {{"error", message}}, ""};
}

bool env_present(const std::string& name) {
  const char* v = std::getenv(name.c_str());
  return v && *v;
}

}  // namespace

Engine::Engine(Config cfg, std::string config_path, Db& db)
    : started_cfg_(cfg),
      file_cfg_(cfg),
      config_path_(std::move(config_path)),
      loaded_at_(now_iso()),
      db_(db),
      role_(cfg.role),
      trading_enabled_(cfg.trading_enabled),
      tick_interval_ms_(cfg.tick_interval_ms),
      shutdown_timeout_seconds_(cfg.shutdown_timeout_seconds) {
  started_ = std::chrono::steady_clock::now();
  started_at_ = now_iso();
  run_id_ = std::to_string(std::chrono::duration_cast<std::chrono::milliseconds>(
                               std::chrono::system_clock::now().time_since_epoch())
                               .count());
  for (const auto& sc : cfg.strategies) {
    Strategy s;
    s.cfg = sc;
    s.running = sc.autostart;
    strategies_[sc.id] = s;
    strategy_order_.push_back(sc.id);
  }
}

void Engine::start() {
  thread_ = std::thread([this] { loop(); });
}

void Engine::loop() {
  while (!stopping_) {
    {
      std::unique_lock<std::mutex> lock(loop_mu_);
      loop_cv_.wait_for(lock, std::chrono::milliseconds(tick_interval_ms_.load()),
                        [this] { return stopping_.load(); });
    }
    if (stopping_) break;
    std::lock_guard<std::mutex> lock(mu_);
    tick_locked();
  }
}

// ---------------------------------------------------------------------------- trading

Engine::Quote Engine::quote(const std::string& exchange, const std::string& symbol) const {
  // Deterministic simulated market: a base price per asset, two sine waves over ticks,
  // and a small fixed offset per exchange. No randomness, no network.
  double base = 100;
  if (symbol.rfind("BTC", 0) == 0) base = 50000;
  else if (symbol.rfind("ETH", 0) == 0) base = 3000;
  else if (symbol.rfind("SOL", 0) == 0) base = 150;
  double offset = static_cast<double>(std::hash<std::string>{}(exchange) % 7) * 1e-5;
  double t = static_cast<double>(tick_);
  double mid = base * (1 + offset + 0.002 * std::sin(t * 2 * M_PI / 40) +
                       0.0007 * std::sin(t * 2 * M_PI / 13));
  double half_spread = mid * 5e-5;
  return {mid - half_spread, mid + half_spread, mid};
}

bool Engine::trading_allowed_locked() const {
  return role_ == "primary" && trading_enabled_ && !kill_active_ && state_loaded_ && !stopping_;
}

bool Engine::load_state_locked() {
  // Until the positions are loaded nothing trades; each distinct problem is logged once.
  std::string err;
  if (!db_.ensure_connected(&err)) {
    if (err != startup_db_error_) log_error("db", "database unreachable, retrying: " + err);
    startup_db_error_ = err;
    return false;
  }
  DbResult r = db_.exec("SELECT exchange, symbol, quantity, avg_price FROM positions");
  if (!r.ok) {
    if (r.error != startup_db_error_)
      log_error("db", "cannot load positions, retrying: " + r.error);
    startup_db_error_ = r.error;
    return false;
  }
  positions_.clear();
  for (const auto& row : r.rows)
    positions_[{row[0], row[1]}] = {std::strtod(row[2].c_str(), nullptr),
                                    std::strtod(row[3].c_str(), nullptr)};
  for (const auto& id : strategy_order_) persist_strategy_locked(strategies_[id]);
  log_info("connected to database " + db_.describe() + "; loaded " +
           std::to_string(positions_.size()) + " positions");
  for (const auto& [key, p] : positions_)
    log_info("position " + key.first + " " + key.second + " quantity " + fmt(p.qty) +
             " avg_price " + fmt(p.avg));
  return true;
}

void Engine::tick_locked() {
  if (!state_loaded_) {
    if (!load_state_locked()) return;
    state_loaded_ = true;
  }
  ++tick_;
  fill_working_locked();
  for (const auto& id : strategy_order_) {
    Strategy& s = strategies_[id];
    if (s.running) evaluate_locked(s);
  }
  if (tick_ % 10 == 0 && trading_allowed_locked()) record_market_data_locked();
  if constexpr (HFT_WRITE_STRATEGY_METRICS) write_strategy_metrics_locked();
}

void Engine::evaluate_locked(Strategy& s) {
  bool exchange_enabled = false;
  for (const auto& e : started_cfg_.exchanges)
    if (e.name == s.cfg.exchange) exchange_enabled = e.enabled;
  if (!exchange_enabled) return;
  Quote q = quote(s.cfg.exchange, s.cfg.symbol);
  s.prices.push_back(q.mid);
  if (s.prices.size() > kSignalWindow) s.prices.pop_front();
  if (s.prices.size() < kSignalWindow || s.has_working) return;
  double sma = 0;
  for (double p : s.prices) sma += p;
  sma /= static_cast<double>(s.prices.size());
  double lot = s.cfg.max_position / 4;
  double eps = 1e-9;
  std::string side;
  double price = 0;
  if (q.mid < sma * (1 - kSignalThreshold) && s.pos + lot <= s.cfg.max_position + eps) {
    side = "buy";
    price = q.ask;
  } else if (q.mid > sma * (1 + kSignalThreshold) && s.pos - lot >= -s.cfg.max_position - eps) {
    side = "sell";
    price = q.bid;
  }
  if (side.empty() || !trading_allowed_locked()) return;  // a standby never sends
  send_order_locked(s, side, lot, price);
}

void Engine::send_order_locked(Strategy& s, const std::string& side, double qty, double price) {
  auto t0 = std::chrono::steady_clock::now();
  std::string client_id = s.cfg.id + "-" + run_id_ + "-" + std::to_string(++seq_);
  // The simulated exchange acknowledges at once: the order is recorded as working and
  // fills on the next tick at its limit price.
  DbResult r = db_.exec(
      "INSERT INTO orders (client_order_id, strategy_id, exchange, symbol, side, quantity, "
      "price, status, paper, created_at, updated_at) "
      "VALUES ($1, $2, $3, $4, $5, $6, $7, 'working', $8, now(), now()) RETURNING id",
      {client_id, s.cfg.id, s.cfg.exchange, s.cfg.symbol, side, fmt(qty), fmt(price),
       pg_bool(s.cfg.paper_trading)});
  if (!r.ok || r.rows.empty()) {
    log_error("db", "order " + client_id + " not recorded, not sent: " + r.error);
    return;
  }
  double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  metrics().observe_order(s.cfg.exchange, s.cfg.paper_trading, secs);
  working_.push_back({std::atoll(r.rows[0][0].c_str()), client_id, s.cfg.id, s.cfg.exchange,
                      s.cfg.symbol, side, qty, price, s.cfg.paper_trading});
  s.has_working = true;
  ++s.orders;
}

void Engine::fill_working_locked() {
  std::vector<Order> still_working;
  for (const Order& o : working_) {
    std::string id = std::to_string(o.id);
    std::vector<DbStatement> tx = {
        {"UPDATE orders SET status = 'filled', updated_at = now() WHERE id = $1", {id}},
        {"INSERT INTO fills (order_id, strategy_id, exchange, symbol, side, quantity, price, "
         "paper, filled_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, now())",
         {id, o.strategy_id, o.exchange, o.symbol, o.side, fmt(o.qty), fmt(o.price),
          pg_bool(o.paper)}}};
    Position next;
    double closed = 0;
    if (!o.paper) {  // paper fills never touch positions
      next = positions_[{o.exchange, o.symbol}];
      apply_fill(next.qty, next.avg, o.side, o.qty, o.price, &closed);
      tx.push_back({"INSERT INTO positions (exchange, symbol, quantity, avg_price, updated_at) "
                    "VALUES ($1, $2, $3, $4, now()) ON CONFLICT (exchange, symbol) DO UPDATE "
                    "SET quantity = EXCLUDED.quantity, avg_price = EXCLUDED.avg_price, "
                    "updated_at = now()",
                    {o.exchange, o.symbol, fmt(next.qty), fmt(next.avg)}});
    }
    DbResult r = db_.exec_tx(tx);
    if (!r.ok) {
      log_error("db", "fill of order " + o.client_id + " not recorded (will retry): " + r.error);
      still_working.push_back(o);
      continue;
    }
    if (!o.paper) positions_[{o.exchange, o.symbol}] = next;
    metrics().count_fill(o.exchange, o.paper);
    auto it = strategies_.find(o.strategy_id);
    if (it != strategies_.end()) {
      Strategy& s = it->second;
      double pnl = apply_fill(s.pos, s.avg, o.side, o.qty, o.price, &closed);
      s.realized += pnl;
      if (closed > 0) {  // a trade that reduced the position: a win when it made money
        ++s.closes;
        if (pnl > 0) ++s.wins;
      }
      ++s.fills;
      s.has_working = false;
    }
  }
  working_ = std::move(still_working);
}

int Engine::cancel_working_locked(const std::string& strategy_id) {
  std::string ids;
  std::vector<Order> keep;
  int n = 0;
  for (const Order& o : working_) {
    if (!strategy_id.empty() && o.strategy_id != strategy_id) {
      keep.push_back(o);
      continue;
    }
    ids += (ids.empty() ? "" : ",") + std::to_string(o.id);
    ++n;
    auto it = strategies_.find(o.strategy_id);
    if (it != strategies_.end()) it->second.has_working = false;
  }
  if (n == 0) return 0;
  DbResult r = db_.exec(
      "UPDATE orders SET status = 'cancelled', updated_at = now() "
      "WHERE id = ANY($1::bigint[]) AND status IN ('new', 'working')",
      {"{" + ids + "}"});
  if (!r.ok) log_error("db", "cancelling working orders failed: " + r.error);
  working_ = std::move(keep);
  return n;
}

void Engine::persist_strategy_locked(const Strategy& s) {
  if (!state_loaded_ && !db_.connected()) return;  // written when the database comes up
  DbResult r = db_.exec(
      "INSERT INTO strategies (id, name, config, enabled, paper_trading, created_at, "
      "updated_at) VALUES ($1, $2, $3::jsonb, $4, $5, now(), now()) ON CONFLICT (id) DO "
      "UPDATE SET name = EXCLUDED.name, config = EXCLUDED.config, enabled = EXCLUDED.enabled, "
      "paper_trading = EXCLUDED.paper_trading, updated_at = now()",
      {s.cfg.id, s.cfg.name, s.cfg.to_json().dump(), pg_bool(s.running),
       pg_bool(s.cfg.paper_trading)});
  if (!r.ok) log_error("db", "cannot save strategy " + s.cfg.id + ": " + r.error);
}

void Engine::record_market_data_locked() {
  std::map<std::pair<std::string, std::string>, bool> seen;
  for (const auto& [id, s] : strategies_) {
    if (!s.running || seen[{s.cfg.exchange, s.cfg.symbol}]) continue;
    seen[{s.cfg.exchange, s.cfg.symbol}] = true;
    Quote q = quote(s.cfg.exchange, s.cfg.symbol);
    DbResult r = db_.exec(
        "INSERT INTO market_data (exchange, symbol, ts, bid, ask, last, volume) "
        "VALUES ($1, $2, now(), $3, $4, $5, $6)",
        {s.cfg.exchange, s.cfg.symbol, fmt(q.bid), fmt(q.ask), fmt(q.mid), fmt(1.0)});
    if (!r.ok) log_error("db", "cannot record market data: " + r.error);
  }
}

void Engine::write_strategy_metrics_locked() {
  // v1.1.0: once a second, the performance of every running strategy (migration 005).
  auto now = std::chrono::steady_clock::now();
  if (now - last_metrics_write_ < std::chrono::seconds(1)) return;
  last_metrics_write_ = now;
  for (const auto& id : strategy_order_) {
    const Strategy& s = strategies_[id];
    if (!s.running) continue;
    double win_rate = s.closes ? static_cast<double>(s.wins) / s.closes : 0;
    DbResult r = db_.exec(
        "INSERT INTO strategy_metrics (strategy_id, timestamp, metric_name, metric_value) "
        "VALUES ($1, now(), 'daily_pnl_usd', $2), ($1, now(), 'win_rate', $3), "
        "($1, now(), 'orders', $4), ($1, now(), 'position', $5) ON CONFLICT DO NOTHING",
        {id, fmt(strategy_pnl_locked(s)), fmt(win_rate), std::to_string(s.orders), fmt(s.pos)});
    if (!r.ok && !metrics_write_failing_) {
      log_error("db", "cannot write strategy_metrics (is migration 005 applied?): " + r.error);
    } else if (r.ok && metrics_write_failing_) {
      log_info("writing strategy_metrics again");
    }
    metrics_write_failing_ = !r.ok;
  }
}

double Engine::strategy_pnl_locked(const Strategy& s) const {
  double unrealised = s.pos * (quote(s.cfg.exchange, s.cfg.symbol).mid - s.avg);
  return s.realized + unrealised;
}

void Engine::set_trading_enabled_locked(bool on, const std::string& source) {
  if (on && kill_active_) {
    kill_active_ = false;
    log_warn("kill switch released by " + source + " (last reason: " + kill_reason_ + ")");
    db_.exec("INSERT INTO killswitch_events (action, scope, reason) VALUES ('release', 'global', $1)",
             {"trading re-enabled by " + source});
  }
  if (trading_enabled_ != on) log_info("trading_enabled " + pg_bool(on) + " (" + source + ")");
  trading_enabled_ = on;
  if (!on) cancel_working_locked("");
}

// ---------------------------------------------------------------------------- shutdown

void Engine::shutdown() {
  stopping_ = true;
  loop_cv_.notify_all();
  if (thread_.joinable()) thread_.join();
  std::lock_guard<std::mutex> lock(mu_);
  int stopped = 0;
  for (const auto& id : strategy_order_) {
    Strategy& s = strategies_[id];
    if (!s.running) continue;
    s.running = false;
    ++stopped;
    if (state_loaded_) persist_strategy_locked(s);
  }
  int cancelled = cancel_working_locked("");
  int flushed = 0;
  if (state_loaded_) {
    std::vector<DbStatement> tx;
    for (const auto& [key, p] : positions_)
      tx.push_back({"INSERT INTO positions (exchange, symbol, quantity, avg_price, updated_at) "
                    "VALUES ($1, $2, $3, $4, now()) ON CONFLICT (exchange, symbol) DO UPDATE "
                    "SET quantity = EXCLUDED.quantity, avg_price = EXCLUDED.avg_price, "
                    "updated_at = now()",
                    {key.first, key.second, fmt(p.qty), fmt(p.avg)}});
    DbResult r = db_.exec_tx(tx);
    if (r.ok) flushed = static_cast<int>(tx.size());
    else log_error("db", "flushing positions failed: " + r.error);
  }
  log_info("shutdown: " + std::to_string(stopped) + " strategies stopped, " +
           std::to_string(cancelled) + " working orders cancelled, " + std::to_string(flushed) +
           " positions flushed");
}

// ---------------------------------------------------------------------------- API

Reply Engine::health() {
  if (stopping_) return {503, {{"status", "unhealthy"}, {"reason", "shutting down"}}, ""};
  DbResult r = db_.exec("SELECT 1 FROM positions LIMIT 1");
  if (!r.ok) {
    std::string reason = r.error.rfind("database unreachable", 0) == 0
                             ? r.error
                             : "database query failed: " + r.error;
    return {503, {{"status", "unhealthy"}, {"reason", reason}}, ""};
  }
  if (!state_loaded_)
    return {503, {{"status", "unhealthy"}, {"reason", "starting: positions not loaded yet"}}, ""};
  return {200, {{"status", "healthy"}}, ""};
}

Reply Engine::status() {
  std::lock_guard<std::mutex> lock(mu_);
  json exchanges = json::array();
  for (const auto& e : started_cfg_.exchanges)
    exchanges.push_back({{"name", e.name},
                         {"status", e.enabled ? "connected" : "disabled"},
                         {"simulated", true},
                         {"api_key_present", env_present(exchange_env_prefix(e.name) + "_API_KEY")}});
  json strategies = json::array();
  int running = 0;
  for (const auto& id : strategy_order_) {
    const Strategy& s = strategies_.at(id);
    running += s.running;
    strategies.push_back({{"id", id},
                          {"name", s.cfg.name},
                          {"status", s.running ? "running" : "stopped"},
                          {"paper_trading", s.cfg.paper_trading}});
  }
  double uptime =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - started_).count();
  long schema = db_.schema_version();
  return {200,
          {{"version", HFT_VERSION},
           {"role", role_},
           {"trading_enabled", trading_enabled_},
           {"trading_active", trading_allowed_locked()},
           {"killswitch",
            {{"active", kill_active_},
             {"reason", kill_reason_.empty() ? json(nullptr) : json(kill_reason_)},
             {"activated_at", kill_at_.empty() ? json(nullptr) : json(kill_at_)}}},
           {"exchanges", exchanges},
           {"strategies", strategies},
           {"strategies_running", running},
           {"working_orders", working_.size()},
           {"database",
            {{"connected", db_.connected()},
             {"positions_loaded", state_loaded_.load()},
             {"schema_version", schema < 0 ? json(nullptr) : json(schema)},
             {"host", started_cfg_.database.host},
             {"port", started_cfg_.database.port},
             {"name", started_cfg_.database.name}}},
           {"features", {{"strategy_metrics", static_cast<bool>(HFT_WRITE_STRATEGY_METRICS)}}},
           {"config_file", config_path_},
           {"started_at", started_at_},
           {"uptime_seconds", uptime},
           {"pid", static_cast<long>(getpid())}},
          ""};
}

Reply Engine::get_config() {
  std::lock_guard<std::mutex> lock(mu_);
  json j = started_cfg_.to_json();
  j["role"] = role_;
  j["trading_enabled"] = trading_enabled_;
  j["shutdown_timeout_seconds"] = shutdown_timeout_seconds_.load();
  j["tick_interval_ms"] = tick_interval_ms_.load();
  json st = json::array();
  for (const auto& id : strategy_order_) st.push_back(strategies_.at(id).cfg.to_json());
  j["strategies"] = st;
  return {200, j, ""};
}

Reply Engine::put_config(const json& body) {
  if (!body.is_object() || body.empty())
    return error_reply(400, "body must be a non-empty JSON object, e.g. {\"role\": \"primary\"}");
  static const std::vector<std::string> file_only = {
      "api", "log_dir", "database", "exchanges", "strategies", "strategies_dir",
      "shutdown_timeout_seconds", "tick_interval_ms"};
  for (const auto& item : body.items()) {
    const std::string& k = item.key();
    const json& v = item.value();
    if (k == "role") {
      if (!v.is_string() || (v != "primary" && v != "standby"))
        return error_reply(400, "'role' must be one of primary, standby, got " + v.dump());
    } else if (k == "trading_enabled") {
      if (!v.is_boolean())
        return error_reply(400, "'trading_enabled' must be a boolean (true or false), got " +
                                    v.dump());
    } else if (std::find(file_only.begin(), file_only.end(), k) != file_only.end()) {
      return error_reply(400, "'" + k +
                                  "' cannot be changed through the API: edit the config file, "
                                  "then GET /api/v1/config/reload or restart");
    } else {
      return error_reply(400, "unknown key '" + k + "'");
    }
  }
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (body.contains("role") && body["role"] != role_) {
      log_info("role " + role_ + " -> " + body["role"].get<std::string>() + " (API)");
      role_ = body["role"].get<std::string>();
      if (role_ != "primary") cancel_working_locked("");
    }
    if (body.contains("trading_enabled"))
      set_trading_enabled_locked(body["trading_enabled"].get<bool>(), "API");
  }
  return get_config();
}

Reply Engine::reload_config() {
  Config fresh;
  try {
    fresh = load_config_file(config_path_);
  } catch (const ConfigError& e) {
    log_error("config", std::string("reload rejected, nothing applied: ") + e.what());
    return error_reply(400, std::string("invalid configuration, nothing applied: ") + e.what());
  }
  std::lock_guard<std::mutex> lock(mu_);
  // A key is applied only when it changed in the file since the last read, so a reload
  // does not undo a runtime change (PUT /api/v1/config) the file knows nothing about.
  json applied = json::array(), skipped = json::array();
  if (fresh.role != file_cfg_.role) {
    log_info("role " + role_ + " -> " + fresh.role + " (config reload)");
    role_ = fresh.role;
    if (role_ != "primary") cancel_working_locked("");
    applied.push_back("role");
  }
  if (fresh.trading_enabled != file_cfg_.trading_enabled) {
    set_trading_enabled_locked(fresh.trading_enabled, "config reload");
    applied.push_back("trading_enabled");
  }
  if (fresh.shutdown_timeout_seconds != file_cfg_.shutdown_timeout_seconds) {
    shutdown_timeout_seconds_ = fresh.shutdown_timeout_seconds;
    applied.push_back("shutdown_timeout_seconds");
  }
  if (fresh.tick_interval_ms != file_cfg_.tick_interval_ms) {
    tick_interval_ms_ = fresh.tick_interval_ms;
    applied.push_back("tick_interval_ms");
  }
  for (const auto& sc : fresh.strategies) {
    if (strategies_.count(sc.id)) continue;
    if (!started_cfg_.has_exchange(sc.exchange)) {
      skipped.push_back(sc.id);
      continue;
    }
    Strategy s;
    s.cfg = sc;
    s.running = sc.autostart;
    strategies_[sc.id] = s;
    strategy_order_.push_back(sc.id);
    persist_strategy_locked(strategies_[sc.id]);
    applied.push_back("strategies." + sc.id);
  }
  file_cfg_ = fresh;
  loaded_at_ = now_iso();
  auto pending = restart_only_changes(started_cfg_, fresh);
  log_info("config reloaded from " + config_path_ + ": " + applied.dump());
  return {200,
          {{"status", "reloaded"},
           {"applied", applied},
           {"skipped_strategies", skipped},
           {"requires_restart", !pending.empty()},
           {"restart_required_keys", pending}},
          ""};
}

Reply Engine::config_status() {
  json j = {{"config_file", config_path_}};
  try {
    Config fresh = load_config_file(config_path_);
    auto pending = restart_only_changes(started_cfg_, fresh);
    j["config_valid"] = true;
    j["requires_restart"] = !pending.empty();
    j["restart_required_keys"] = pending;
  } catch (const ConfigError& e) {
    j["config_valid"] = false;
    j["error"] = e.what();
    j["requires_restart"] = false;
    j["restart_required_keys"] = json::array();
  }
  std::lock_guard<std::mutex> lock(mu_);
  j["loaded_at"] = loaded_at_;
  j["started_at"] = started_at_;
  return {200, j, ""};
}

Reply Engine::killswitch(const json& body) {
  if (!body.is_object()) return error_reply(400, "body must be a JSON object {\"reason\": ...}");
  std::string reason = "no reason given";
  if (body.contains("reason")) {
    if (!body["reason"].is_string() || body["reason"].get<std::string>().empty())
      return error_reply(400, "'reason' must be a non-empty string");
    reason = body["reason"].get<std::string>();
  }
  for (const auto& item : body.items())
    if (item.key() != "reason") return error_reply(400, "unknown key '" + item.key() + "'");
  std::lock_guard<std::mutex> lock(mu_);
  kill_active_ = true;
  kill_reason_ = reason;
  kill_at_ = now_iso();
  trading_enabled_ = false;
  int cancelled = cancel_working_locked("");
  log_warn("KILL SWITCH activated: " + reason + " (" + std::to_string(cancelled) +
           " working orders cancelled)");
  DbResult r = db_.exec(
      "INSERT INTO killswitch_events (action, scope, reason) VALUES ('activate', 'global', $1)",
      {reason});
  if (!r.ok) log_warn("kill switch event not recorded in killswitch_events: " + r.error);
  return {200,
          {{"status", "killswitch_activated"},
           {"reason", reason},
           {"activated_at", kill_at_},
           {"cancelled_orders", cancelled}},
          ""};
}

Reply Engine::positions() {
  std::lock_guard<std::mutex> lock(mu_);
  json list = json::array();
  for (const auto& [key, p] : positions_) {
    double mid = quote(key.first, key.second).mid;
    list.push_back({{"exchange", key.first},
                    {"symbol", key.second},
                    {"quantity", p.qty},
                    {"avg_price", p.avg},
                    {"market_price", mid},
                    {"unrealized_pnl_usd", p.qty * (mid - p.avg)}});
  }
  return {200, {{"positions", list}, {"loaded_from_database", state_loaded_.load()}}, ""};
}

json Engine::strategy_json_locked(const Strategy& s) const {
  json j = s.cfg.to_json();
  j["status"] = s.running ? "running" : "stopped";
  j["position"] = s.pos;
  j["performance"] = {{"daily_pnl_usd", strategy_pnl_locked(s)},
                      {"realized_pnl_usd", s.realized},
                      {"win_rate", s.closes ? static_cast<double>(s.wins) / s.closes : 0.0},
                      {"orders", s.orders},
                      {"fills", s.fills}};
  return j;
}

Reply Engine::list_strategies() {
  std::lock_guard<std::mutex> lock(mu_);
  json list = json::array();
  for (const auto& id : strategy_order_) list.push_back(strategy_json_locked(strategies_.at(id)));
  return {200, {{"strategies", list}}, ""};
}

Reply Engine::get_strategy(const std::string& id) {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = strategies_.find(id);
  if (it == strategies_.end()) return error_reply(404, "no strategy '" + id + "'");
  return {200, strategy_json_locked(it->second), ""};
}

Reply Engine::load_strategy(const json& body) {
  if (!body.is_object() || !body.contains("config_file") || !body["config_file"].is_string())
    return error_reply(400, "body must be {\"config_file\": \"path/to/strategy.json\"}");
  for (const auto& item : body.items())
    if (item.key() != "config_file") return error_reply(400, "unknown key '" + item.key() + "'");
  StrategyConfig sc;
  try {
    sc = load_strategy_file(body["config_file"].get<std::string>(), started_cfg_);
  } catch (const ConfigError& e) {
    return error_reply(400, e.what());
  }
  std::lock_guard<std::mutex> lock(mu_);
  if (strategies_.count(sc.id))
    return error_reply(409, "strategy '" + sc.id + "' is already loaded; DELETE it first");
  Strategy s;
  s.cfg = sc;
  s.running = sc.autostart;
  strategies_[sc.id] = s;
  strategy_order_.push_back(sc.id);
  persist_strategy_locked(strategies_[sc.id]);
  log_info("strategy " + sc.id + " loaded from " + body["config_file"].get<std::string>());
  return {201, strategy_json_locked(strategies_[sc.id]), ""};
}

Reply Engine::start_strategy(const std::string& id) {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = strategies_.find(id);
  if (it == strategies_.end()) return error_reply(404, "no strategy '" + id + "'");
  if (!it->second.running) {
    it->second.running = true;
    persist_strategy_locked(it->second);
    log_info("strategy " + id + " started");
  }
  return {200, strategy_json_locked(it->second), ""};
}

Reply Engine::stop_strategy(const std::string& id) {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = strategies_.find(id);
  if (it == strategies_.end()) return error_reply(404, "no strategy '" + id + "'");
  if (it->second.running) {
    it->second.running = false;
    cancel_working_locked(id);
    persist_strategy_locked(it->second);
    log_info("strategy " + id + " stopped");
  }
  return {200, strategy_json_locked(it->second), ""};
}

Reply Engine::delete_strategy(const std::string& id) {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = strategies_.find(id);
  if (it == strategies_.end()) return error_reply(404, "no strategy '" + id + "'");
  // Unloaded from this instance; its row stays (enabled = false) as the history of its orders.
  it->second.running = false;
  cancel_working_locked(id);
  persist_strategy_locked(it->second);
  strategies_.erase(it);
  strategy_order_.erase(std::find(strategy_order_.begin(), strategy_order_.end(), id));
  log_info("strategy " + id + " unloaded");
  return {200, {{"status", "deleted"}, {"id", id}}, ""};
}

Reply Engine::strategy_config(const std::string& id, const json& body) {
  if (!body.is_object() || body.empty())
    return error_reply(400, "body must be a JSON object, e.g. {\"paper_trading\": true}");
  for (const auto& item : body.items()) {
    if (item.key() != "paper_trading")
      return error_reply(400, "unknown key '" + item.key() + "' (only paper_trading can be set)");
    if (!item.value().is_boolean())
      return error_reply(400, "'paper_trading' must be a boolean (true or false), got " +
                                  item.value().dump());
  }
  std::lock_guard<std::mutex> lock(mu_);
  auto it = strategies_.find(id);
  if (it == strategies_.end()) return error_reply(404, "no strategy '" + id + "'");
  Strategy& s = it->second;
  bool paper = body["paper_trading"].get<bool>();
  if (s.cfg.paper_trading != paper) {
    // Switching between paper and live starts the strategy's own book afresh, so paper
    // positions never turn into live orders.
    cancel_working_locked(id);
    s.cfg.paper_trading = paper;
    s.pos = s.avg = 0;
    persist_strategy_locked(s);
    log_info("strategy " + id + " paper_trading " + pg_bool(paper));
  }
  return {200, strategy_json_locked(s), ""};
}

Reply Engine::metrics_text() {
  std::map<std::string, double> g;
  {
    std::lock_guard<std::mutex> lock(mu_);
    g["hft_role_primary"] = role_ == "primary";
    g["hft_trading_enabled"] = trading_enabled_;
    g["hft_trading_active"] = trading_allowed_locked();
    g["hft_killswitch_active"] = kill_active_;
    g["hft_working_orders"] = static_cast<double>(working_.size());
    g["hft_strategies_loaded"] = static_cast<double>(strategies_.size());
    int running = 0;
    for (const auto& [id, s] : strategies_) {
      running += s.running;
      g["hft_strategy_pnl_usd{strategy=\"" + prom_escape(id) + "\"}"] = strategy_pnl_locked(s);
    }
    g["hft_strategies_running"] = running;
    for (const auto& [key, p] : positions_)
      g["hft_position_quantity{exchange=\"" + prom_escape(key.first) + "\",symbol=\"" +
        prom_escape(key.second) + "\"}"] = p.qty;
    g["hft_uptime_seconds"] =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - started_).count();
  }
  g["hft_database_connected"] = db_.connected();
  Reply r;
  r.text = metrics().render(g);
  return r;
}

}  // namespace hft
