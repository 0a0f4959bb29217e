// The configuration file (JSON) and its validation. Every error names the key, e.g.
//   unknown key 'api.prot'
//   'api.port' must be an integer, got string
// Secrets are never part of the configuration: the database password comes from the
// environment variable DB_PASSWORD, exchange keys from <EXCHANGE>_API_KEY/_API_SECRET.
#pragma once
#include <stdexcept>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace hft {

using json = nlohmann::json;

struct ConfigError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

struct StrategyConfig {
  std::string id, name, symbol, exchange;
  bool paper_trading = false;
  double max_position = 0;
  bool autostart = false;
  json to_json() const;
};

struct ExchangeConfig {
  std::string name;
  bool enabled = true;
};

struct DatabaseConfig {
  std::string host;
  int port = 5432;
  std::string name;
  std::string user;
  int connect_timeout_seconds = 5;
};

struct LeaseConfig {
  int ttl_ms = 5000;             // a lease not renewed for this long is free for another node
  int renew_interval_ms = 1000;  // the holder renews this often; at most ttl_ms / 2
};

struct Config {
  std::string role;  // "primary" | "standby"
  bool trading_enabled = false;
  std::string node_id;  // who holds the primary lease; default: the hostname
  LeaseConfig lease;
  std::string api_bind = "127.0.0.1";  // an IP literal; loopback unless the config says so
  int api_port = 8080;
  std::string log_dir = "/var/log/hft_system";
  DatabaseConfig database;
  std::vector<ExchangeConfig> exchanges;
  std::vector<StrategyConfig> strategies;  // from "strategies" and then "strategies_dir"
  std::string strategies_dir;               // resolved path, "" when not set
  int shutdown_timeout_seconds = 30;
  int tick_interval_ms = 100;

  json to_json() const;
  bool has_exchange(const std::string& name) const;
};

// Reads and validates a config file. Relative paths inside it (log_dir, strategies_dir)
// are resolved against the directory of the file. Throws ConfigError.
Config load_config_file(const std::string& path);

// Reads and validates one strategy file (the same object as an entry of "strategies");
// its exchange must be one of cfg's exchanges. Throws ConfigError.
StrategyConfig load_strategy_file(const std::string& path, const Config& cfg);

// The keys that only take effect after a restart: the one list, used by
// GET /config/status, the reload and `hft_system --restart-keys`.
const std::vector<std::string>& restart_only_keys();
// Those of restart_only_keys() that differ between a and b.
std::vector<std::string> restart_only_changes(const Config& a, const Config& b);

// Environment variable names for an exchange's key, e.g. binance -> BINANCE_API_KEY.
std::string exchange_env_prefix(const std::string& exchange);

}  // namespace hft
