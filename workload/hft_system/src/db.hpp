// A small libpq wrapper: one connection, serialised by a mutex, reconnected on demand.
// The password is read from the environment variable DB_PASSWORD at connect time and is
// never stored in a conninfo string or logged.
#pragma once
#include <chrono>
#include <mutex>
#include <string>
#include <utility>
#include <vector>

#include <libpq-fe.h>

#include "config.hpp"

namespace hft {

struct DbResult {
  bool ok = false;
  std::string error;
  std::vector<std::vector<std::string>> rows;  // text values; NULL as ""
};

struct DbStatement {
  std::string sql;
  std::vector<std::string> params;
};

class Db {
 public:
  // options: server settings for the session, libpq's "options" (e.g. "-c lock_timeout=5000").
  explicit Db(DatabaseConfig cfg, std::string options = "")
      : cfg_(std::move(cfg)), options_(std::move(options)) {}
  ~Db();
  Db(const Db&) = delete;
  Db& operator=(const Db&) = delete;

  // Connects if not connected (at most one attempt per second); false with *err if down.
  bool ensure_connected(std::string* err);
  bool connected();
  // max(version) of schema_version: read at each (re)connect, and again when asked more than
  // 5 s after the last read (a migration applied while connected); -1 when unknown.
  long schema_version();
  // One statement, or several in one transaction (rolled back on the first error).
  DbResult exec(const std::string& sql, const std::vector<std::string>& params = {});
  DbResult exec_tx(const std::vector<DbStatement>& statements);
  // host:port/name as user, for logs and status (no password).
  std::string describe() const;

 private:
  bool connect_locked(std::string* err);
  DbResult exec_locked(const std::string& sql, const std::vector<std::string>& params);
  void read_schema_version_locked();

  DatabaseConfig cfg_;
  std::string options_;
  std::mutex mu_;
  PGconn* conn_ = nullptr;
  std::string last_error_;
  std::chrono::steady_clock::time_point last_attempt_{};
  long schema_version_ = -1;
  std::chrono::steady_clock::time_point schema_read_{};
};

}  // namespace hft
