// Logging to <log_dir>/system.log (everything) and <log_dir>/errors.log (errors only),
// echoed to stdout/stderr for journald. Never pass a secret to these functions.
#pragma once
#include <string>

namespace hft {

// Opens (creates) both files in dir; returns false with the reason in *err.
bool log_open(const std::string& dir, std::string* err);
void log_info(const std::string& msg);
void log_warn(const std::string& msg);
// component labels hft_errors_total{component="..."} in the metrics.
void log_error(const std::string& component, const std::string& msg);

// Current UTC time as ISO 8601 with milliseconds, e.g. 2025-11-25T10:00:00.123Z.
std::string now_iso();

}  // namespace hft
