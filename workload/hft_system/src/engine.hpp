// The trading engine: simulated exchanges and market data, strategies, orders, fills and
// positions, persisted in PostgreSQL. All state is guarded by one mutex; the trading loop
// runs on its own thread, one tick every tick_interval_ms.
//
// Trading rule: orders (paper or live) are sent only when role is "primary", trading is
// enabled, the kill switch is not active, the positions were loaded from the database and
// this node holds the primary lease (migration 006) with an unexpired local deadline.
// A standby evaluates its strategies but never sends an order.
//
// The lease: one row per book in trading_lease; its epoch is the fencing token that every
// order, fill and position write carries and that the database checks. A node takes the
// lease (new epoch) when it starts trading or is promoted, renews it every
// lease.renew_interval_ms on its own connection and thread, and stops trading by itself
// when a renewal fails or is overdue.
#pragma once
#include <atomic>
#include <condition_variable>
#include <deque>
#include <map>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "config.hpp"
#include "db.hpp"

namespace hft {

struct Reply {
  int status = 200;
  json body = json::object();
  std::string text;  // when non-empty, sent as text/plain instead of body
};

class Engine {
 public:
  Engine(Config cfg, std::string config_path, Db& db);
  void start();
  // Graceful stop: strategies stop, working orders are cancelled, positions flushed.
  void shutdown();
  int shutdown_timeout_seconds() const { return shutdown_timeout_seconds_; }

  Reply health();
  Reply status();
  Reply get_config();
  Reply put_config(const json& body);
  Reply reload_config();
  Reply config_status();
  Reply killswitch(const json& body);
  Reply positions();
  Reply list_strategies();
  Reply get_strategy(const std::string& id);
  Reply load_strategy(const json& body);
  Reply start_strategy(const std::string& id);
  Reply stop_strategy(const std::string& id);
  Reply delete_strategy(const std::string& id);
  Reply strategy_config(const std::string& id, const json& body);
  Reply metrics_text();
  Reply fence(const json& body);
  Reply promote(const json& body);

 private:
  struct Position {
    double qty = 0, avg = 0;
  };
  struct Strategy {
    StrategyConfig cfg;
    bool running = false;
    double pos = 0, avg = 0, realized = 0;  // the strategy's own book, paper or live
    long wins = 0, closes = 0, orders = 0, fills = 0;
    bool has_working = false;
    std::deque<double> prices;  // recent mids for the signal
    // When it entered paper mode, as the strategies row records it (migration 007): ISO 8601
    // UTC, "" when live or not recorded yet. Kept across restarts by the row; a live -> paper
    // switch or an unload starts it afresh.
    std::string paper_since;
  };
  struct Order {
    long long id;
    std::string client_id, strategy_id, exchange, symbol, side;
    double qty, price;
    bool paper;
  };
  struct Quote {
    double bid, ask, mid;
  };

  void loop();
  void tick_locked();
  bool load_state_locked();
  void evaluate_locked(Strategy& s);
  void send_order_locked(Strategy& s, const std::string& side, double qty, double price);
  void fill_working_locked();
  int cancel_working_locked(const std::string& strategy_id);  // "" = all
  // Upserts the strategies row and reads back paper_since. unloaded: the strategy leaves this
  // process (DELETE), so its paper record ends; a later load starts a new one.
  void persist_strategy_locked(Strategy& s, bool unloaded = false);
  void record_market_data_locked();
  void write_strategy_metrics_locked();
  bool trading_allowed_locked() const;
  Quote quote(const std::string& exchange, const std::string& symbol) const;
  json strategy_json_locked(const Strategy& s) const;
  double strategy_pnl_locked(const Strategy& s) const;
  void set_trading_enabled_locked(bool on, const std::string& source);

  // ---- the primary lease (fencing)
  struct LeaseView {  // what the database last said about the lease row
    bool known = false;
    long long epoch = 0;
    std::string holder, expires_at, observed_at, error;
  };
  bool holds_lease() const;  // my_epoch_ > 0 and the local deadline has not passed
  // Takes the lease (a new epoch) if it is free, expired or ours; keeps it if this process
  // already holds it. false with *code (409 held by another, 503 database) and *why.
  bool acquire_lease_locked(int* code, std::string* why, bool* already_held);
  void release_lease_locked(const std::string& why);
  // Stops trading because the lease is gone: trading off, working orders cancelled, the
  // reason kept for /status and /health. Any operator action clears the reason.
  void lease_lost_locked(const std::string& why);
  bool reload_positions_locked(std::string* err);
  // Applies role/trading_enabled with the lease: taken (and positions reloaded) when the
  // node starts to trade, released when it stops. false with *err when it cannot be taken.
  bool set_trading_state_locked(const std::string& role, bool enabled, const std::string& source,
                                Reply* err);
  void lease_loop();
  LeaseView observe_lease();  // one SELECT on the lease connection (lease_op_mu_ held)
  std::string describe_lease(const LeaseView& v) const;
  json lease_json() const;
  bool is_fenced_error(const std::string& err) const { return err.find("fenced:") != std::string::npos; }

  Config started_cfg_;  // as read at start: restart-only keys are compared with it
  Config file_cfg_;     // as last read from disk (start or reload)
  std::string config_path_;
  std::string loaded_at_;
  Db& db_;

  mutable std::mutex mu_;
  std::string role_;
  bool trading_enabled_;
  bool kill_active_ = false;
  std::string kill_reason_, kill_at_;
  std::map<std::string, Strategy> strategies_;
  std::vector<std::string> strategy_order_;  // load order, for stable listings
  std::map<std::pair<std::string, std::string>, Position> positions_;
  std::vector<Order> working_;
  long long tick_ = 0;
  long long seq_ = 0;
  std::string run_id_;
  std::string started_at_;
  std::chrono::steady_clock::time_point started_;
  std::chrono::steady_clock::time_point last_metrics_write_{};
  bool metrics_write_failing_ = false;
  bool paper_since_column_ = true;  // false once the database said migration 007 is missing
  std::string startup_db_error_;
  std::atomic<int> tick_interval_ms_;
  std::atomic<int> shutdown_timeout_seconds_;

  std::string node_id_;
  int lease_ttl_ms_, lease_renew_ms_;
  Db lease_db_;                  // own connection: renewals never queue behind order writes
  std::mutex lease_op_mu_;       // serialises lease statements (acquire, renew, release)
  std::atomic<long long> my_epoch_{0};           // the epoch we hold, 0 = none
  std::atomic<long long> lease_deadline_ns_{0};  // steady clock; no trading after it
  mutable std::mutex lease_mu_;  // guards lease_view_
  LeaseView lease_view_;
  long long last_epoch_ = 0;     // the last epoch this process held (under mu_)
  std::string stopped_reason_;   // why this node stopped trading by itself (under mu_)
  std::thread lease_thread_;

  std::atomic<bool> state_loaded_{false};
  std::atomic<bool> stopping_{false};
  std::mutex loop_mu_;
  std::condition_variable loop_cv_;
  std::thread thread_;
};

}  // namespace hft
