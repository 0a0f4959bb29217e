#include "api.hpp"

#include <chrono>
#include <functional>

#include "log.hpp"
#include "metrics.hpp"

namespace hft {
namespace {

struct BadRequest : std::runtime_error {
  using std::runtime_error::runtime_error;
};

// Bodies are JSON whatever the Content-Type (the runbook's `curl -d` sends a form type).
json body_json(const httplib::Request& req) {
  if (req.body.empty()) return json::object();
  try {
    return json::parse(req.body);
  } catch (const json::parse_error& e) {
    throw BadRequest(std::string("request body is not valid JSON: ") + e.what());
  }
}

using Handler = std::function<Reply(const httplib::Request&)>;

// Registers one route; times it, counts it, turns exceptions into JSON errors.
void route(httplib::Server& server, const std::string& method, const std::string& pattern,
           const std::string& name, Handler handler) {
  auto wrapped = [name, handler](const httplib::Request& req, httplib::Response& res) {
    auto t0 = std::chrono::steady_clock::now();
    Reply reply;
    try {
      reply = handler(req);
    } catch (const BadRequest& e) {
      reply = {400, {{"error", e.what()}}, ""};
    } catch (const std::exception& e) {
      log_error("api", req.method + " " + req.path + ": " + e.what());
      reply = {500, {{"error", e.what()}}, ""};
    }
    res.status = reply.status;
    if (!reply.text.empty())
      res.set_content(reply.text, "text/plain; version=0.0.4; charset=utf-8");
    else
      res.set_content(reply.body.dump() + "\n", "application/json");
    double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    metrics().observe_request(name, reply.status, secs);
  };
  if (method == "GET") server.Get(pattern, wrapped);
  else if (method == "POST") server.Post(pattern, wrapped);
  else if (method == "PUT") server.Put(pattern, wrapped);
  else if (method == "DELETE") server.Delete(pattern, wrapped);
}

}  // namespace

void register_routes(httplib::Server& s, Engine& e) {
  const std::string v1 = "/api/v1";
  const std::string id = "([A-Za-z0-9_.-]+)";
  route(s, "GET", v1 + "/health", "health", [&](auto&) { return e.health(); });
  route(s, "GET", v1 + "/status", "status", [&](auto&) { return e.status(); });
  route(s, "GET", v1 + "/config", "config", [&](auto&) { return e.get_config(); });
  route(s, "PUT", v1 + "/config", "config_put",
        [&](auto& req) { return e.put_config(body_json(req)); });
  route(s, "GET", v1 + "/config/reload", "config_reload", [&](auto&) { return e.reload_config(); });
  route(s, "POST", v1 + "/config/reload", "config_reload", [&](auto&) { return e.reload_config(); });
  route(s, "GET", v1 + "/config/status", "config_status", [&](auto&) { return e.config_status(); });
  route(s, "POST", v1 + "/killswitch", "killswitch",
        [&](auto& req) { return e.killswitch(body_json(req)); });
  route(s, "GET", v1 + "/positions", "positions", [&](auto&) { return e.positions(); });
  route(s, "GET", v1 + "/strategies", "strategies", [&](auto&) { return e.list_strategies(); });
  route(s, "POST", v1 + "/strategies/load", "strategy_load",
        [&](auto& req) { return e.load_strategy(body_json(req)); });
  route(s, "GET", v1 + "/strategies/" + id, "strategy",
        [&](auto& req) { return e.get_strategy(req.matches[1]); });
  route(s, "POST", v1 + "/strategies/" + id + "/start", "strategy_start",
        [&](auto& req) { return e.start_strategy(req.matches[1]); });
  route(s, "POST", v1 + "/strategies/" + id + "/stop", "strategy_stop",
        [&](auto& req) { return e.stop_strategy(req.matches[1]); });
  route(s, "DELETE", v1 + "/strategies/" + id, "strategy_delete",
        [&](auto& req) { return e.delete_strategy(req.matches[1]); });
  route(s, "PUT", v1 + "/strategies/" + id + "/config", "strategy_config",
        [&](auto& req) { return e.strategy_config(req.matches[1], body_json(req)); });
  route(s, "GET", v1 + "/metrics", "metrics", [&](auto&) { return e.metrics_text(); });

  // Unknown paths and methods get a JSON error too.
  s.set_error_handler([](const httplib::Request& req, httplib::Response& res) {
    if (res.body.empty())
      res.set_content(json{{"error", "no route " + req.method + " " + req.path}}.dump() + "\n",
                      "application/json");
  });
}

}  // namespace hft
