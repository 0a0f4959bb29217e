#include "log.hpp"

#include <chrono>
#include <cstdio>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <mutex>

#include "metrics.hpp"

namespace hft {
namespace {
std::mutex g_mu;
std::ofstream g_system;
std::ofstream g_errors;

void write(const char* level, const std::string& msg, bool is_error) {
  std::string line = now_iso() + " " + level + " " + msg + "\n";
  std::lock_guard<std::mutex> lock(g_mu);
  (is_error ? std::cerr : std::cout) << line << std::flush;
  if (g_system.is_open()) g_system << line << std::flush;
  if (is_error && g_errors.is_open()) g_errors << line << std::flush;
}
}  // namespace

std::string now_iso() {
  auto now = std::chrono::system_clock::now();
  auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(now.time_since_epoch()).count();
  std::time_t secs = static_cast<std::time_t>(ms / 1000);
  std::tm tm{};
  gmtime_r(&secs, &tm);
  char buf[64];
  std::snprintf(buf, sizeof buf, "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ", tm.tm_year + 1900,
                tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec,
                static_cast<int>(ms % 1000));
  return buf;
}

bool log_open(const std::string& dir, std::string* err) {
  std::error_code ec;
  std::filesystem::create_directories(dir, ec);
  if (ec) {
    *err = "cannot create log directory " + dir + ": " + ec.message();
    return false;
  }
  std::lock_guard<std::mutex> lock(g_mu);
  g_system.open(dir + "/system.log", std::ios::app);
  g_errors.open(dir + "/errors.log", std::ios::app);
  if (!g_system.is_open() || !g_errors.is_open()) {
    *err = "cannot open " + dir + "/system.log or errors.log for writing";
    return false;
  }
  return true;
}

void log_info(const std::string& msg) { write("INFO", msg, false); }
void log_warn(const std::string& msg) { write("WARN", msg, false); }
void log_error(const std::string& component, const std::string& msg) {
  metrics().count_error(component);
  write("ERROR", "[" + component + "] " + msg, true);
}

}  // namespace hft
