#include "api.hpp"

#include <chrono>
#include <functional>
#include <memory>
#include <optional>

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

// Who may change state: nullptr means the route is read-only and open to all.
struct Auth {
  std::string token;  // "" = none configured: every state-changing request is refused
};

// nullopt when the request may proceed, else the refusal.
std::optional<Reply> check_auth(const Auth& auth, const httplib::Request& req) {
  if (auth.token.empty())
    return Reply{403,
                 {{"error", std::string("the API is read-only: no token is configured (set ") +
                                kApiTokenEnv + " in /opt/hft_system/.env and restart); "
                                "state-changing requests are refused"},
                  {"read_only", true}},
                 ""};
  static const std::string prefix = "Bearer ";
  std::string header = req.get_header_value("Authorization");
  if (header.empty())
    return Reply{401,
                 {{"error", "unauthorized: this request changes state and needs the header "
                            "'Authorization: Bearer <token>'"}},
                 ""};
  if (header.compare(0, prefix.size(), prefix) != 0 ||
      !token_equal(auth.token, header.substr(prefix.size())))
    return Reply{401, {{"error", "unauthorized: the bearer token is not valid"}}, ""};
  return std::nullopt;
}

// Registers one route; checks the token (auth != nullptr), times it, counts it, turns
// exceptions into JSON errors.
void route(httplib::Server& server, const std::string& method, const std::string& pattern,
           const std::string& name, Handler handler, const Auth* auth = nullptr) {
  auto wrapped = [name, handler, auth](const httplib::Request& req, httplib::Response& res) {
    auto t0 = std::chrono::steady_clock::now();
    Reply reply;
    try {
      std::optional<Reply> refused = auth ? check_auth(*auth, req) : std::nullopt;
      if (refused) {
        reply = *refused;
        if (reply.status == 401) res.set_header("WWW-Authenticate", "Bearer realm=\"hft_system\"");
      } else {
        reply = handler(req);
      }
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

bool token_equal(const std::string& expected, const std::string& given) {
  // Every byte of `given` is compared, whatever matches, so the time says nothing about
  // how much of the token was right.
  volatile unsigned char diff = expected.size() == given.size() ? 0 : 1;
  for (size_t i = 0; i < given.size(); ++i) {
    unsigned char x = i < expected.size() ? static_cast<unsigned char>(expected[i]) : 0;
    diff = diff | (x ^ static_cast<unsigned char>(given[i]));
  }
  return diff == 0 && !expected.empty();
}

void register_routes(httplib::Server& s, Engine& e, std::string token) {
  // Lives as long as the server (the process); routes keep a pointer to it.
  static std::unique_ptr<Auth> auth_holder;
  auth_holder = std::make_unique<Auth>(Auth{std::move(token)});
  const Auth* w = auth_holder.get();  // state-changing: needs the token
  const std::string v1 = "/api/v1";
  const std::string id = "([A-Za-z0-9_.-]+)";
  route(s, "GET", v1 + "/health", "health", [&](auto&) { return e.health(); });
  route(s, "GET", v1 + "/status", "status", [&](auto&) { return e.status(); });
  route(s, "GET", v1 + "/config", "config", [&](auto&) { return e.get_config(); });
  route(s, "PUT", v1 + "/config", "config_put",
        [&](auto& req) { return e.put_config(body_json(req)); }, w);
  // A GET that changes state (the runbook calls it with curl): it needs the token too.
  route(s, "GET", v1 + "/config/reload", "config_reload", [&](auto&) { return e.reload_config(); }, w);
  route(s, "POST", v1 + "/config/reload", "config_reload", [&](auto&) { return e.reload_config(); }, w);
  route(s, "GET", v1 + "/config/status", "config_status", [&](auto&) { return e.config_status(); });
  route(s, "POST", v1 + "/killswitch", "killswitch",
        [&](auto& req) { return e.killswitch(body_json(req)); }, w);
  route(s, "POST", v1 + "/fence", "fence", [&](auto& req) { return e.fence(body_json(req)); }, w);
  route(s, "POST", v1 + "/promote", "promote",
        [&](auto& req) { return e.promote(body_json(req)); }, w);
  route(s, "GET", v1 + "/positions", "positions", [&](auto&) { return e.positions(); });
  route(s, "GET", v1 + "/strategies", "strategies", [&](auto&) { return e.list_strategies(); });
  route(s, "POST", v1 + "/strategies/load", "strategy_load",
        [&](auto& req) { return e.load_strategy(body_json(req)); }, w);
  route(s, "GET", v1 + "/strategies/" + id, "strategy",
        [&](auto& req) { return e.get_strategy(req.matches[1]); });
  route(s, "POST", v1 + "/strategies/" + id + "/start", "strategy_start",
        [&](auto& req) { return e.start_strategy(req.matches[1]); }, w);
  route(s, "POST", v1 + "/strategies/" + id + "/stop", "strategy_stop",
        [&](auto& req) { return e.stop_strategy(req.matches[1]); }, w);
  route(s, "DELETE", v1 + "/strategies/" + id, "strategy_delete",
        [&](auto& req) { return e.delete_strategy(req.matches[1]); }, w);
  route(s, "PUT", v1 + "/strategies/" + id + "/config", "strategy_config",
        [&](auto& req) { return e.strategy_config(req.matches[1], body_json(req)); }, w);
  route(s, "GET", v1 + "/metrics", "metrics", [&](auto&) { return e.metrics_text(); });

  // Unknown paths and methods get a JSON error too.
  s.set_error_handler([](const httplib::Request& req, httplib::Response& res) {
    if (res.body.empty())
      res.set_content(json{{"error", "no route " + req.method + " " + req.path}}.dump() + "\n",
                      "application/json");
  });
}

}  // namespace hft
