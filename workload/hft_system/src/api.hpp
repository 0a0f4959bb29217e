// HTTP routes of /api/v1 (runbook 3.8, 4.1, 5.1, 5.3, 7.1, 7.2, 3.7).
//
// Authentication: every state-changing request (PUT, POST, DELETE, and GET /config/reload)
// needs `Authorization: Bearer <token>`, the token being the environment variable
// HFT_API_TOKEN at start (systemd loads it from /opt/hft_system/.env). Without a configured
// token those requests are refused (read-only API). Read-only GETs stay open.
#pragma once
#include <string>

#include <httplib.h>

#include "engine.hpp"

namespace hft {

constexpr const char* kApiTokenEnv = "HFT_API_TOKEN";

// token: "" = none configured (read-only API). The token is kept here and never logged.
void register_routes(httplib::Server& server, Engine& engine, std::string token);

// Constant-time comparison (the time depends only on the length of `given`).
bool token_equal(const std::string& expected, const std::string& given);

}  // namespace hft
