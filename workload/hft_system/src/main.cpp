// hft_system: the reference workload of hft-deploy. A small stand-in for a trading engine
// with the interface the deployment runbook uses: command line, HTTP API, PostgreSQL state,
// logs and signals. Exchanges and market data are simulated; nothing leaves the host.
#include <pthread.h>
#include <signal.h>
#include <unistd.h>

#include <cstdlib>
#include <iostream>
#include <thread>

#include "api.hpp"
#include "config.hpp"
#include "db.hpp"
#include "engine.hpp"
#include "log.hpp"

using namespace hft;

static int usage(const char* why) {
  std::cerr << "hft_system: " << why << "\n"
            << "usage: hft_system --config=PATH\n"
            << "       hft_system --validate-config --config=PATH\n"
            << "       hft_system --version\n"
            << "       hft_system --restart-keys   (JSON list of the keys a reload cannot apply)\n";
  return 2;
}

int main(int argc, char** argv) {
  std::string config_path;
  bool validate = false;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    if (a == "--version") {
      std::cout << "hft_system " << HFT_VERSION << "\n";
      return 0;
    } else if (a == "--restart-keys") {
      std::cout << json(restart_only_keys()).dump() << "\n";
      return 0;
    } else if (a == "--help" || a == "-h") {
      usage("help");
      return 0;
    } else if (a == "--validate-config") {
      validate = true;
    } else if (a.rfind("--config=", 0) == 0) {
      config_path = a.substr(9);
    } else if (a == "--config" && i + 1 < argc) {
      config_path = argv[++i];
    } else {
      return usage(("unknown argument: " + a).c_str());
    }
  }
  if (config_path.empty()) return usage("--config=PATH is required");

  Config cfg;
  try {
    cfg = load_config_file(config_path);
  } catch (const ConfigError& e) {
    std::cerr << "hft_system: invalid configuration " << config_path << ": " << e.what() << "\n";
    return 1;
  }
  if (validate) {
    std::cout << "hft_system: configuration " << config_path << " is valid (role " << cfg.role
              << ", " << cfg.exchanges.size() << " exchanges, " << cfg.strategies.size()
              << " strategies)\n";
    return 0;
  }

  // Signals are taken synchronously by the main thread (sigwait); block them everywhere.
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGTERM);
  sigaddset(&signals, SIGINT);
  sigaddset(&signals, SIGHUP);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);

  std::string err;
  if (!log_open(cfg.log_dir, &err)) {
    std::cerr << "hft_system: " << err << "\n";
    return 1;
  }
  log_info("hft_system " + std::string(HFT_VERSION) + " starting (pid " +
           std::to_string(getpid()) + "): config " + config_path + ", role " + cfg.role +
           ", trading_enabled " + (cfg.trading_enabled ? "true" : "false") +
           ", strategy_metrics " + (HFT_WRITE_STRATEGY_METRICS ? "on" : "off"));
  // A session of ours left idle inside a transaction (this process paused or cut off
  // mid-write) is ended by the server after one lease TTL, so it cannot hold the lease row
  // FOR SHARE and block the promotion of another node.
  Db db(cfg.database,
        "-c idle_in_transaction_session_timeout=" + std::to_string(cfg.lease.ttl_ms));
  log_info("database " + db.describe() + ", password " +
           (std::getenv("DB_PASSWORD") ? "from DB_PASSWORD" : "not set (DB_PASSWORD)"));
  for (const auto& x : cfg.exchanges) {
    const char* key = std::getenv((exchange_env_prefix(x.name) + "_API_KEY").c_str());
    log_info("exchange " + x.name + " (simulated): " + (x.enabled ? "enabled" : "disabled") +
             ", API key " + (key && *key ? "present" : "absent"));
  }

  log_info("node " + cfg.node_id + ", primary lease ttl " + std::to_string(cfg.lease.ttl_ms) +
           " ms, renewed every " + std::to_string(cfg.lease.renew_interval_ms) + " ms");
  const char* token = std::getenv(kApiTokenEnv);
  std::string api_token = token ? token : "";
  if (api_token.empty())
    log_warn(std::string("API is READ-ONLY: ") + kApiTokenEnv +
             " is not set, so every state-changing request (PUT, POST, DELETE, "
             "GET /config/reload) is refused");
  else
    log_info(std::string("API: state-changing requests need 'Authorization: Bearer' with ") +
             kApiTokenEnv + " (set" + (api_token.size() < 16 ? ", shorter than 16 characters: use a longer one" : "") + ")");

  Engine engine(cfg, config_path, db);
  httplib::Server server;
  server.new_task_queue = [] { return new httplib::ThreadPool(4); };
  // Runbook 3.2's "net.ipv4.tcp_nodelay=1" is not a Linux sysctl: Nagle is switched off per
  // socket by the program. The API's sockets here; libpq sets TCP_NODELAY on its own.
  server.set_tcp_nodelay(true);
  register_routes(server, engine, std::move(api_token));
  if (!server.bind_to_port(cfg.api_bind, cfg.api_port)) {
    log_error("api", "cannot listen on " + cfg.api_bind + ":" + std::to_string(cfg.api_port));
    return 1;
  }
  std::thread http([&server] { server.listen_after_bind(); });
  engine.start();
  log_info("API listening on " + cfg.api_bind + ":" + std::to_string(cfg.api_port));

  int sig = 0;
  for (;;) {
    sigwait(&signals, &sig);
    if (sig != SIGHUP) break;
    log_info("SIGHUP: reloading configuration");
    engine.reload_config();
  }

  int timeout = engine.shutdown_timeout_seconds();
  log_info(std::string("received ") + (sig == SIGTERM ? "SIGTERM" : "SIGINT") +
           ": graceful shutdown (at most " + std::to_string(timeout) + " s)");
  std::thread([timeout] {
    std::this_thread::sleep_for(std::chrono::seconds(timeout));
    log_error("shutdown", "graceful shutdown took longer than " + std::to_string(timeout) +
                              " s; exiting now");
    _exit(1);
  }).detach();
  engine.shutdown();
  server.stop();
  http.join();
  log_info("shutdown complete");
  return 0;
}
