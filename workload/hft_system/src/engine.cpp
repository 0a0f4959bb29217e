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

// Timestamps from SQL as ISO 8601 UTC with milliseconds, like now_iso().
const char* const kIso = "to_char(%s AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.MS\"Z\"')";
std::string iso(const std::string& column) {
  char buf[256];
  std::snprintf(buf, sizeof buf, kIso, column.c_str());
  return buf;
}

long long steady_ns() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(
             std::chrono::steady_clock::now().time_since_epoch())
      .count();
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
      shutdown_timeout_seconds_(cfg.shutdown_timeout_seconds),
      node_id_(cfg.node_id),
      lease_ttl_ms_(cfg.lease.ttl_ms),
      lease_renew_ms_(cfg.lease.renew_interval_ms),
      // A lease statement waits at most half a TTL (e.g. for in-flight order writes that
      // hold the lease row FOR SHARE), so a renewal cannot hang past the lease.
      lease_db_(cfg.database, "-c statement_timeout=" + std::to_string(cfg.lease.ttl_ms / 2)) {
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
  lease_thread_ = std::thread([this] { lease_loop(); });
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
  return role_ == "primary" && trading_enabled_ && !kill_active_ && state_loaded_ && !stopping_ &&
         holds_lease();
}

bool Engine::load_state_locked() {
  // Until the positions are loaded nothing trades; each distinct problem is logged once.
  std::string err;
  if (!db_.ensure_connected(&err)) {
    if (err != startup_db_error_) log_error("db", "database unreachable, retrying: " + err);
    startup_db_error_ = err;
    return false;
  }
  DbResult probe = db_.exec("SELECT 1 FROM positions LIMIT 1");
  if (!probe.ok) {
    if (probe.error != startup_db_error_)
      log_error("db", "cannot load positions, retrying: " + probe.error);
    startup_db_error_ = probe.error;
    return false;
  }
  // A primary with trading enabled takes the lease BEFORE it reads the positions, so that
  // no other node can still be changing them. If another node holds it, this one does not
  // trade and says why (status, health); an operator decides (POST /promote or /fence).
  if (role_ == "primary" && trading_enabled_ && !holds_lease()) {
    int code = 0;
    std::string why;
    bool already = false;
    if (!acquire_lease_locked(&code, &why, &already)) {
      trading_enabled_ = false;
      stopped_reason_ = "not trading since start: " + why;
      log_error("lease", "configured primary with trading enabled, but " + why +
                             ": NOT trading (POST /api/v1/promote once the other node is fenced)");
    }
  }
  std::string perr;
  if (!reload_positions_locked(&perr)) {
    if (perr != startup_db_error_) log_error("db", "cannot load positions, retrying: " + perr);
    startup_db_error_ = perr;
    return false;
  }
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
  if (my_epoch_ > 0 && steady_ns() >= lease_deadline_ns_)
    lease_lost_locked("lease renewal overdue: no successful renewal within " +
                      std::to_string(lease_ttl_ms_ - lease_renew_ms_) + " ms");
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
  // The order carries our lease epoch: the database refuses it unless that epoch is the
  // current epoch of a held, unexpired lease (migration 006).
  DbResult r = db_.exec(
      "INSERT INTO orders (client_order_id, strategy_id, exchange, symbol, side, quantity, "
      "price, status, paper, created_at, updated_at, epoch) "
      "VALUES ($1, $2, $3, $4, $5, $6, $7, 'working', $8, now(), now(), $9) RETURNING id",
      {client_id, s.cfg.id, s.cfg.exchange, s.cfg.symbol, side, fmt(qty), fmt(price),
       pg_bool(s.cfg.paper_trading), std::to_string(my_epoch_.load())});
  if (!r.ok || r.rows.empty()) {
    log_error("db", "order " + client_id + " not recorded, not sent: " + r.error);
    if (is_fenced_error(r.error)) lease_lost_locked("order refused by the database: " + r.error);
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
  std::string fenced;
  for (const Order& o : working_) {
    std::string id = std::to_string(o.id);
    std::string epoch = std::to_string(my_epoch_.load());
    // One transaction, every statement with our epoch: if the database refuses one (a
    // stale epoch), the order update, the fill and the position all roll back.
    std::vector<DbStatement> tx = {
        {"UPDATE orders SET status = 'filled', updated_at = now(), epoch = $2 WHERE id = $1",
         {id, epoch}},
        {"INSERT INTO fills (order_id, strategy_id, exchange, symbol, side, quantity, price, "
         "paper, filled_at, epoch) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, now(), $9)",
         {id, o.strategy_id, o.exchange, o.symbol, o.side, fmt(o.qty), fmt(o.price),
          pg_bool(o.paper), epoch}}};
    Position next;
    double closed = 0;
    if (!o.paper) {  // paper fills never touch positions
      next = positions_[{o.exchange, o.symbol}];
      apply_fill(next.qty, next.avg, o.side, o.qty, o.price, &closed);
      tx.push_back({"INSERT INTO positions (exchange, symbol, quantity, avg_price, updated_at, "
                    "epoch) VALUES ($1, $2, $3, $4, now(), $5) ON CONFLICT (exchange, symbol) "
                    "DO UPDATE SET quantity = EXCLUDED.quantity, avg_price = EXCLUDED.avg_price, "
                    "updated_at = now(), epoch = EXCLUDED.epoch",
                    {o.exchange, o.symbol, fmt(next.qty), fmt(next.avg), epoch}});
    }
    DbResult r = db_.exec_tx(tx);
    if (!r.ok && is_fenced_error(r.error)) {
      // Not ours to fill any more: the remaining working orders are cancelled below.
      log_error("db", "fill of order " + o.client_id + " refused by the database: " + r.error);
      still_working.push_back(o);
      fenced = r.error;
      continue;
    }
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
  if (!fenced.empty()) lease_lost_locked("fill refused by the database: " + fenced);
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

void Engine::persist_strategy_locked(Strategy& s, bool unloaded) {
  if (!state_loaded_ && !db_.connected()) return;  // written when the database comes up
  std::vector<std::string> params = {s.cfg.id, s.cfg.name, s.cfg.to_json().dump(),
                                     pg_bool(s.running), pg_bool(s.cfg.paper_trading)};
  if (paper_since_column_) {
    // paper_since (migration 007): when the strategy entered paper mode. Kept while it stays
    // in paper (restarts, start/stop, reloads); NULL when live; NULL when unloaded, so that a
    // strategy loaded again starts a new paper record.
    params.push_back(pg_bool(unloaded));
    DbResult r = db_.exec(
        "INSERT INTO strategies (id, name, config, enabled, paper_trading, paper_since, "
        "created_at, updated_at) VALUES ($1, $2, $3::jsonb, $4, $5, "
        "CASE WHEN $5 AND NOT $6 THEN now() END, now(), now()) ON CONFLICT (id) DO "
        "UPDATE SET name = EXCLUDED.name, config = EXCLUDED.config, enabled = EXCLUDED.enabled, "
        "paper_trading = EXCLUDED.paper_trading, paper_since = CASE "
        "WHEN NOT EXCLUDED.paper_trading OR $6 THEN NULL "
        "ELSE COALESCE(strategies.paper_since, now()) END, updated_at = now() "
        "RETURNING " + iso("paper_since"),
        params);
    if (r.ok) {
      s.paper_since = r.rows.empty() ? "" : r.rows[0][0];
      return;
    }
    if (r.error.find("paper_since") == std::string::npos) {
      log_error("db", "cannot save strategy " + s.cfg.id + ": " + r.error);
      return;
    }
    paper_since_column_ = false;
    params.pop_back();
    log_error("db", "strategies.paper_since is missing (is migration 007 applied?): paper records "
                    "are not kept; saving strategies without them");
  }
  s.paper_since.clear();
  DbResult r = db_.exec(
      "INSERT INTO strategies (id, name, config, enabled, paper_trading, created_at, "
      "updated_at) VALUES ($1, $2, $3::jsonb, $4, $5, now(), now()) ON CONFLICT (id) DO "
      "UPDATE SET name = EXCLUDED.name, config = EXCLUDED.config, enabled = EXCLUDED.enabled, "
      "paper_trading = EXCLUDED.paper_trading, updated_at = now()",
      params);
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
  if (lease_thread_.joinable()) lease_thread_.join();
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
  // Positions are written with every fill; the flush is a last copy, and only the lease
  // holder may write them (a stale node must not overwrite the new primary's positions).
  if (state_loaded_ && my_epoch_ > 0) {
    std::string epoch = std::to_string(my_epoch_.load());
    std::vector<DbStatement> tx;
    for (const auto& [key, p] : positions_)
      tx.push_back({"INSERT INTO positions (exchange, symbol, quantity, avg_price, updated_at, "
                    "epoch) VALUES ($1, $2, $3, $4, now(), $5) ON CONFLICT (exchange, symbol) "
                    "DO UPDATE SET quantity = EXCLUDED.quantity, avg_price = EXCLUDED.avg_price, "
                    "updated_at = now(), epoch = EXCLUDED.epoch",
                    {key.first, key.second, fmt(p.qty), fmt(p.avg), epoch}});
    DbResult r = db_.exec_tx(tx);
    if (r.ok) flushed = static_cast<int>(tx.size());
    else log_error("db", "flushing positions failed: " + r.error);
  }
  release_lease_locked("shutdown");
  log_info("shutdown: " + std::to_string(stopped) + " strategies stopped, " +
           std::to_string(cancelled) + " working orders cancelled, " + std::to_string(flushed) +
           " positions flushed");
}

// ---------------------------------------------------------------------------- lease

bool Engine::holds_lease() const {
  return my_epoch_ > 0 && steady_ns() < lease_deadline_ns_;
}

Engine::LeaseView Engine::observe_lease() {
  LeaseView v;
  v.observed_at = now_iso();
  DbResult r = lease_db_.exec("SELECT holder, epoch, " + iso("expires_at") +
                              ", holder IS NOT NULL AND expires_at > clock_timestamp() "
                              "FROM trading_lease WHERE book = 'primary'");
  if (!r.ok) {
    v.error = r.error;
  } else if (r.rows.empty()) {
    v.error = "no row for book 'primary' in trading_lease";
  } else {
    v.known = true;
    v.holder = r.rows[0][3] == "t" ? r.rows[0][0] : "";
    v.epoch = std::atoll(r.rows[0][1].c_str());
    v.expires_at = r.rows[0][3] == "t" ? r.rows[0][2] : "";
    if (r.rows[0][3] != "t" && !r.rows[0][0].empty())
      v.error = "expired: last holder " + r.rows[0][0] + " until " + r.rows[0][2];
  }
  std::lock_guard<std::mutex> lock(lease_mu_);
  lease_view_ = v;
  return v;
}

std::string Engine::describe_lease(const LeaseView& v) const {
  if (!v.known) return "lease state unknown (" + v.error + ")";
  if (v.holder.empty())
    return "the lease of book 'primary' is free (epoch " + std::to_string(v.epoch) +
           (v.error.empty() ? "" : ", " + v.error) + ")";
  return "the lease of book 'primary' is held by " + v.holder + " (epoch " +
         std::to_string(v.epoch) + ") until " + v.expires_at;
}

bool Engine::acquire_lease_locked(int* code, std::string* why, bool* already_held) {
  std::lock_guard<std::mutex> op(lease_op_mu_);
  *already_held = false;
  long long e = my_epoch_;
  auto t0 = steady_ns();
  if (e > 0 && t0 < lease_deadline_ns_) {  // ours already: renew it, keep the epoch
    DbResult r = lease_db_.exec(
        "UPDATE trading_lease SET expires_at = clock_timestamp() + $3 * interval '1 millisecond', "
        "updated_at = clock_timestamp() WHERE book = 'primary' AND holder = $1 AND epoch = $2 "
        "AND expires_at > clock_timestamp() RETURNING " + iso("expires_at"),
        {node_id_, std::to_string(e), std::to_string(lease_ttl_ms_)});
    if (r.ok && r.rows.size() == 1) {
      lease_deadline_ns_ = t0 + static_cast<long long>(lease_ttl_ms_ - lease_renew_ms_) * 1000000;
      std::lock_guard<std::mutex> lock(lease_mu_);
      lease_view_ = {true, e, node_id_, r.rows[0][0], now_iso(), ""};
      *already_held = true;
      return true;
    }
    my_epoch_ = 0;  // lost it: try to take it afresh below
  }
  // Free, expired or already ours (a restart of this node): a new epoch fences every
  // earlier holder, including an older process of this same node.
  DbResult r = lease_db_.exec(
      "UPDATE trading_lease SET epoch = epoch + 1, holder = $1, acquired_at = clock_timestamp(), "
      "expires_at = clock_timestamp() + $2 * interval '1 millisecond', "
      "updated_at = clock_timestamp() WHERE book = 'primary' AND (holder IS NULL OR "
      "expires_at <= clock_timestamp() OR holder = $1) RETURNING epoch, " + iso("expires_at"),
      {node_id_, std::to_string(lease_ttl_ms_)});
  if (!r.ok) {
    *code = 503;
    *why = "cannot take the lease: " + r.error +
           (r.error.find("trading_lease") != std::string::npos ? " (is migration 006 applied?)"
                                                               : "");
    return false;
  }
  if (r.rows.empty()) {
    LeaseView v = observe_lease();
    *code = v.known ? 409 : 503;
    *why = describe_lease(v);
    return false;
  }
  long long epoch = std::atoll(r.rows[0][0].c_str());
  lease_deadline_ns_ = t0 + static_cast<long long>(lease_ttl_ms_ - lease_renew_ms_) * 1000000;
  my_epoch_ = epoch;
  last_epoch_ = epoch;
  {
    std::lock_guard<std::mutex> lock(lease_mu_);
    lease_view_ = {true, epoch, node_id_, r.rows[0][1], now_iso(), ""};
  }
  log_info("lease of book 'primary' taken by " + node_id_ + ": epoch " + std::to_string(epoch) +
           ", expires " + r.rows[0][1] + " unless renewed");
  return true;
}

void Engine::release_lease_locked(const std::string& why) {
  long long e = my_epoch_.exchange(0);
  if (e == 0) return;
  std::lock_guard<std::mutex> op(lease_op_mu_);
  DbResult r = lease_db_.exec(
      "UPDATE trading_lease SET holder = NULL, expires_at = NULL, updated_at = clock_timestamp() "
      "WHERE book = 'primary' AND holder = $1 AND epoch = $2 RETURNING epoch",
      {node_id_, std::to_string(e)});
  if (!r.ok)
    log_error("lease", "releasing the lease (epoch " + std::to_string(e) + ", " + why +
                           ") failed, it expires by itself: " + r.error);
  else if (r.rows.empty())
    log_warn("lease epoch " + std::to_string(e) + " was no longer ours to release (" + why + ")");
  else
    log_info("lease of book 'primary' released: epoch " + std::to_string(e) + " (" + why + ")");
  observe_lease();
}

void Engine::lease_lost_locked(const std::string& why) {
  my_epoch_ = 0;
  bool was_trading = role_ == "primary" && trading_enabled_;
  trading_enabled_ = false;
  int cancelled = cancel_working_locked("");  // cancelling is allowed to a stale node
  if (was_trading || stopped_reason_.empty()) stopped_reason_ = "lease lost: " + why;
  log_error("lease", "STOPPED TRADING: lease lost: " + why + " (" + std::to_string(cancelled) +
                         " working orders cancelled; POST /api/v1/promote to take it again)");
}

bool Engine::reload_positions_locked(std::string* err) {
  DbResult r = db_.exec("SELECT exchange, symbol, quantity, avg_price FROM positions");
  if (!r.ok) {
    *err = r.error;
    return false;
  }
  positions_.clear();
  for (const auto& row : r.rows)
    positions_[{row[0], row[1]}] = {std::strtod(row[2].c_str(), nullptr),
                                    std::strtod(row[3].c_str(), nullptr)};
  return true;
}

bool Engine::set_trading_state_locked(const std::string& role, bool enabled,
                                      const std::string& source, Reply* err) {
  bool want = role == "primary" && enabled;
  bool was_trading = role_ == "primary" && trading_enabled_;
  // Until the positions are loaded the start-up path takes the lease (load_state_locked).
  if (want && state_loaded_ && !holds_lease()) {
    int code = 0;
    bool already = false;
    std::string why;
    if (!acquire_lease_locked(&code, &why, &already)) {
      *err = {code, {{"error", "not applied: this node cannot trade because " + why}}, ""};
      if (code == 409) err->body["lease"] = lease_json();
      return false;
    }
    std::string perr;
    if (!already && !reload_positions_locked(&perr)) {
      release_lease_locked("positions could not be reloaded");
      *err = {503, {{"error", "not applied: positions could not be reloaded: " + perr}}, ""};
      return false;
    }
    if (!already)
      log_info("positions reloaded from the database (" + std::to_string(positions_.size()) +
               ") for lease epoch " + std::to_string(my_epoch_.load()));
  }
  if (role != role_) {
    log_info("role " + role_ + " -> " + role + " (" + source + ")");
    role_ = role;
    if (role_ != "primary") cancel_working_locked("");
  }
  set_trading_enabled_locked(enabled, source);
  if (role_ != "primary" || (was_trading && !enabled)) release_lease_locked(source);
  stopped_reason_.clear();
  return true;
}

json Engine::lease_json() const {
  LeaseView v;
  {
    std::lock_guard<std::mutex> lock(lease_mu_);
    v = lease_view_;
  }
  long long mine = my_epoch_;
  return {{"book", "primary"},
          {"node_id", node_id_},
          {"held_by_me", holds_lease()},
          {"my_epoch", mine > 0 ? json(mine) : json(nullptr)},
          {"holder", v.holder.empty() ? json(nullptr) : json(v.holder)},
          {"epoch", v.known ? json(v.epoch) : json(nullptr)},
          {"expires_at", v.expires_at.empty() ? json(nullptr) : json(v.expires_at)},
          {"observed_at", v.observed_at.empty() ? json(nullptr) : json(v.observed_at)},
          {"error", v.error.empty() ? json(nullptr) : json(v.error)},
          {"ttl_ms", lease_ttl_ms_},
          {"renew_interval_ms", lease_renew_ms_}};
}

void Engine::lease_loop() {
  // Renews the lease while we hold it; otherwise watches the row, so a standby shows the
  // holder in /status. A failed or refused renewal stops trading at once; the tick also
  // stops it when the local deadline (last renewal + ttl - renew interval) passes.
  while (!stopping_) {
    {
      std::unique_lock<std::mutex> lock(loop_mu_);
      loop_cv_.wait_for(lock, std::chrono::milliseconds(lease_renew_ms_),
                        [this] { return stopping_.load(); });
    }
    if (stopping_) break;
    std::string lost;
    long long e = 0;
    {
      std::lock_guard<std::mutex> op(lease_op_mu_);
      e = my_epoch_;
      if (e == 0) {
        observe_lease();
        continue;
      }
      auto t0 = steady_ns();
      DbResult r = lease_db_.exec(
          "UPDATE trading_lease SET expires_at = clock_timestamp() + $3 * interval '1 millisecond', "
          "updated_at = clock_timestamp() WHERE book = 'primary' AND holder = $1 AND epoch = $2 "
          "AND expires_at > clock_timestamp() RETURNING " + iso("expires_at"),
          {node_id_, std::to_string(e), std::to_string(lease_ttl_ms_)});
      if (r.ok && r.rows.size() == 1) {
        if (my_epoch_ == e) {
          lease_deadline_ns_ = t0 + static_cast<long long>(lease_ttl_ms_ - lease_renew_ms_) * 1000000;
          std::lock_guard<std::mutex> lock(lease_mu_);
          lease_view_ = {true, e, node_id_, r.rows[0][0], now_iso(), ""};
        }
        continue;
      }
      if (my_epoch_ != e) continue;  // released or replaced meanwhile
      lost = r.ok ? "renewal of epoch " + std::to_string(e) + " refused: " +
                        describe_lease(observe_lease())
                  : "renewal of epoch " + std::to_string(e) + " failed: " + r.error;
    }
    std::lock_guard<std::mutex> lock(mu_);
    if (my_epoch_ == e) lease_lost_locked(lost);
  }
}

// ---------------------------------------------------------------------------- API

Reply Engine::health() {
  if (stopping_) return {503, {{"status", "unhealthy"}, {"reason", "shutting down"}}, ""};
  if constexpr (HFT_NEVER_HEALTHY)
    return {503, {{"status", "unhealthy"}, {"reason", "this release is built never to be healthy (NEVER_HEALTHY)"}}, ""};
  DbResult r = db_.exec("SELECT 1 FROM positions LIMIT 1");
  if (!r.ok) {
    std::string reason = r.error.rfind("database unreachable", 0) == 0
                             ? r.error
                             : "database query failed: " + r.error;
    return {503, {{"status", "unhealthy"}, {"reason", reason}}, ""};
  }
  if (!state_loaded_)
    return {503, {{"status", "unhealthy"}, {"reason", "starting: positions not loaded yet"}}, ""};
  // Honest about fencing: a node that stopped trading by itself (lease lost, or another
  // node held the lease when it started as primary) is not doing what it was told to do.
  // An operator's promote, fence or PUT /config clears this.
  std::lock_guard<std::mutex> lock(mu_);
  if (!stopped_reason_.empty())
    return {503, {{"status", "unhealthy"}, {"reason", stopped_reason_}}, ""};
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
           {"trading_stopped_reason",
            !stopped_reason_.empty()          ? json(stopped_reason_)
            : my_epoch_ > 0 && !holds_lease() ? json("lease renewal overdue (stopping)")
                                               : json(nullptr)},
           {"node_id", node_id_},
           {"lease", lease_json()},
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
    std::string role = body.contains("role") ? body["role"].get<std::string>() : role_;
    bool enabled = body.contains("trading_enabled") ? body["trading_enabled"].get<bool>()
                                                    : trading_enabled_;
    Reply err;
    if (!set_trading_state_locked(role, enabled, "API", &err)) return err;
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
  bool role_changed = fresh.role != file_cfg_.role;
  bool trading_changed = fresh.trading_enabled != file_cfg_.trading_enabled;
  if (role_changed || trading_changed) {
    // All or nothing: when the lease cannot be taken nothing of the file is applied (and
    // the next reload tries again).
    Reply err;
    if (!set_trading_state_locked(role_changed ? fresh.role : role_,
                                  trading_changed ? fresh.trading_enabled : trading_enabled_,
                                  "config reload", &err)) {
      log_error("config", "reload not applied: " + err.body["error"].get<std::string>());
      return err;
    }
    if (role_changed) applied.push_back("role");
    if (trading_changed) applied.push_back("trading_enabled");
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
  j["restart_only_keys"] = restart_only_keys();
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
  // Trading is off, so the lease goes too: another node (runbook 5.1 step 3: blue) can
  // take over without waiting for it to expire.
  release_lease_locked("kill switch");
  stopped_reason_.clear();
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
  j["paper_since"] = s.paper_since.empty() ? json(nullptr) : json(s.paper_since);
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
  persist_strategy_locked(it->second, true);
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

// ---------------------------------------------------------------------------- cutover

Reply Engine::fence(const json& body) {
  if (!body.is_object()) return error_reply(400, "body must be a JSON object (or empty)");
  for (const auto& item : body.items())
    if (item.key() != "reason") return error_reply(400, "unknown key '" + item.key() + "'");
  if (body.contains("reason") && !body["reason"].is_string())
    return error_reply(400, "'reason' must be a string");
  std::string why = body.contains("reason") ? body["reason"].get<std::string>() : "fenced";
  std::lock_guard<std::mutex> lock(mu_);
  long long e = my_epoch_;
  bool was = role_ == "primary" && (trading_enabled_ || e > 0);
  // 1. trading off and not primary any more: nothing new is sent from here on.
  if (trading_enabled_) log_info("trading_enabled false (fence: " + why + ")");
  trading_enabled_ = false;
  if (role_ != "standby") log_info("role " + role_ + " -> standby (fence: " + why + ")");
  role_ = "standby";
  stopped_reason_.clear();
  // 2. working orders cancelled, and confirmed in the database: those we know of and any
  //    other order of our epoch still open there.
  std::string ids;
  for (const Order& o : working_) ids += (ids.empty() ? "" : ",") + std::to_string(o.id);
  int cancelled = cancel_working_locked("");
  long long report_epoch = e > 0 ? e : last_epoch_;
  json reply = {{"status", "fenced"},
                {"node_id", node_id_},
                {"role", role_},
                {"trading_enabled", false},
                {"already_fenced", !was && cancelled == 0},
                {"orders_cancelled", cancelled},
                {"epoch_released", nullptr},
                {"last_order_at", nullptr}};
  if (e > 0) {
    DbResult r = db_.exec(
        "UPDATE orders SET status = 'cancelled', updated_at = now() WHERE epoch = $1 "
        "AND status IN ('new', 'working') RETURNING id",
        {std::to_string(e)});
    if (r.ok) reply["orders_cancelled"] = cancelled + static_cast<int>(r.rows.size());
  }
  DbResult c = db_.exec(
      "SELECT count(*) FILTER (WHERE status IN ('new', 'working')), " + iso("max(created_at)") +
          " FROM orders WHERE epoch = $1 OR id = ANY($2::bigint[])",
      {std::to_string(report_epoch), "{" + ids + "}"});
  if (!c.ok) {
    // Trading is off here whatever happens; without the database we cannot confirm the
    // cancels nor release the lease, which then expires by itself (we stop renewing).
    my_epoch_ = 0;
    reply["status"] = "fence incomplete";
    reply["error"] = "cannot confirm in the database: " + c.error +
                     "; trading is off here and the lease expires by itself within " +
                     std::to_string(lease_ttl_ms_) + " ms";
    reply["lease"] = lease_json();
    log_error("lease", "fence incomplete: " + c.error);
    return {503, reply, ""};
  }
  long long open = std::atoll(c.rows[0][0].c_str());
  reply["working_orders_in_db"] = open;
  reply["last_order_at"] = c.rows[0][1].empty() ? json(nullptr) : json(c.rows[0][1]);
  if (open != 0) {
    reply["status"] = "fence incomplete";
    reply["error"] = std::to_string(open) + " orders of this node are still open in the database";
    return {503, reply, ""};
  }
  if (e > 0) {
    release_lease_locked("fence: " + why);
    reply["epoch_released"] = e;
  }
  reply["lease"] = lease_json();
  log_warn("FENCED (" + why + "): trading off, role standby, " +
           std::to_string(reply["orders_cancelled"].get<int>()) + " working orders cancelled" +
           (e > 0 ? ", lease epoch " + std::to_string(e) + " released" : ", no lease held"));
  return {200, reply, ""};
}

Reply Engine::promote(const json& body) {
  if (!body.is_object()) return error_reply(400, "body must be a JSON object (or empty)");
  for (const auto& item : body.items()) {
    if (item.key() != "trading_enabled" && item.key() != "start_strategies")
      return error_reply(400, "unknown key '" + item.key() +
                                  "' (promote takes trading_enabled, start_strategies)");
    if (!item.value().is_boolean())
      return error_reply(400, "'" + item.key() + "' must be a boolean (true or false), got " +
                                  item.value().dump());
  }
  bool trade = body.value("trading_enabled", true);
  bool start = body.value("start_strategies", true);
  std::lock_guard<std::mutex> lock(mu_);
  if (!state_loaded_)
    return error_reply(503, "cannot promote: positions not loaded from the database yet (" +
                                (startup_db_error_.empty() ? "starting" : startup_db_error_) + ")");
  int code = 0;
  bool already = false;
  std::string why;
  if (!acquire_lease_locked(&code, &why, &already)) {
    json b = {{"error", "cannot promote: " + why}, {"lease", lease_json()}};
    log_warn("promote refused: " + why);
    return {code, b, ""};
  }
  // Positions as the database has them now: the lease is ours, so nobody else changes them.
  std::string perr;
  if (!reload_positions_locked(&perr)) {
    release_lease_locked("promote: positions could not be reloaded");
    return error_reply(503, "cannot promote: positions could not be reloaded: " + perr);
  }
  if (role_ != "primary") log_info("role " + role_ + " -> primary (promote)");
  role_ = "primary";
  set_trading_enabled_locked(trade, "promote");
  stopped_reason_.clear();
  json started = json::array();
  if (start) {
    for (const auto& id : strategy_order_) {
      Strategy& s = strategies_[id];
      if (s.running) continue;
      s.running = true;
      persist_strategy_locked(s);
      started.push_back(id);
    }
  }
  long long e = my_epoch_;
  log_warn("PROMOTED: " + node_id_ + " is primary with lease epoch " + std::to_string(e) +
           (already ? " (already held)" : " (new)") + ", " + std::to_string(positions_.size()) +
           " positions reloaded, trading_enabled " + pg_bool(trading_enabled_) + ", " +
           std::to_string(started.size()) + " strategies started");
  json lease = lease_json();
  return {200,
          {{"status", "promoted"},
           {"node_id", node_id_},
           {"epoch", e},
           {"new_epoch", !already},
           {"expires_at", lease["expires_at"]},
           {"role", role_},
           {"trading_enabled", trading_enabled_},
           {"positions_loaded", positions_.size()},
           {"strategies_started", started},
           {"lease", lease}},
          ""};
}

Reply Engine::metrics_text() {
  std::map<std::string, double> g;
  {
    std::lock_guard<std::mutex> lock(mu_);
    g["hft_role_primary"] = role_ == "primary";
    g["hft_trading_enabled"] = trading_enabled_;
    g["hft_trading_active"] = trading_allowed_locked();
    g["hft_lease_held"] = holds_lease();
    g["hft_lease_epoch"] = static_cast<double>(my_epoch_.load());
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
