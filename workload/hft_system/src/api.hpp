// HTTP routes of /api/v1 (runbook 3.8, 4.1, 5.1, 5.3, 7.1, 7.2, 3.7).
#pragma once
#include <httplib.h>

#include "engine.hpp"

namespace hft {
void register_routes(httplib::Server& server, Engine& engine);
}
