#include "db.hpp"

#include <cstdlib>

namespace hft {

Db::~Db() {
  if (conn_) PQfinish(conn_);
}

std::string Db::describe() const {
  return cfg_.host + ":" + std::to_string(cfg_.port) + "/" + cfg_.name + " as " + cfg_.user;
}

static std::string trim(std::string s) {
  while (!s.empty() && (s.back() == '\n' || s.back() == ' ')) s.pop_back();
  return s;
}

bool Db::connect_locked(std::string* err) {
  if (conn_ && PQstatus(conn_) == CONNECTION_OK) return true;
  auto now = std::chrono::steady_clock::now();
  if (now - last_attempt_ < std::chrono::seconds(1) && !last_error_.empty()) {
    *err = last_error_;
    return false;
  }
  last_attempt_ = now;
  if (conn_) {
    PQfinish(conn_);
    conn_ = nullptr;
  }
  std::string port = std::to_string(cfg_.port);
  std::string timeout = std::to_string(cfg_.connect_timeout_seconds);
  const char* password = std::getenv("DB_PASSWORD");
  // tcp_user_timeout: a query sent into a dead network path fails after the connect
  // timeout instead of hanging until the kernel gives up (many minutes).
  std::string user_timeout = std::to_string(cfg_.connect_timeout_seconds * 1000);
  std::vector<const char*> keys = {"host", "port", "dbname", "user", "connect_timeout",
                                   "application_name", "tcp_user_timeout"};
  std::vector<const char*> values = {cfg_.host.c_str(), port.c_str(), cfg_.name.c_str(),
                                     cfg_.user.c_str(), timeout.c_str(), "hft_system",
                                     user_timeout.c_str()};
  if (!options_.empty()) {
    keys.push_back("options");
    values.push_back(options_.c_str());
  }
  if (password) {
    keys.push_back("password");
    values.push_back(password);
  }
  keys.push_back(nullptr);
  values.push_back(nullptr);
  conn_ = PQconnectdbParams(keys.data(), values.data(), 0);
  if (PQstatus(conn_) != CONNECTION_OK) {
    last_error_ = trim(PQerrorMessage(conn_));
    PQfinish(conn_);
    conn_ = nullptr;
    *err = last_error_;
    return false;
  }
  last_error_.clear();
  read_schema_version_locked();
  return true;
}

void Db::read_schema_version_locked() {
  schema_read_ = std::chrono::steady_clock::now();
  schema_version_ = -1;
  PGresult* res = PQexec(conn_, "SELECT max(version) FROM schema_version");
  if (PQresultStatus(res) == PGRES_TUPLES_OK && PQntuples(res) == 1 && !PQgetisnull(res, 0, 0))
    schema_version_ = std::strtol(PQgetvalue(res, 0, 0), nullptr, 10);
  PQclear(res);
}

long Db::schema_version() {
  std::lock_guard<std::mutex> lock(mu_);
  if (!conn_ || PQstatus(conn_) != CONNECTION_OK) return -1;
  if (std::chrono::steady_clock::now() - schema_read_ >= std::chrono::seconds(5))
    read_schema_version_locked();
  return schema_version_;
}

bool Db::ensure_connected(std::string* err) {
  std::lock_guard<std::mutex> lock(mu_);
  return connect_locked(err);
}

bool Db::connected() {
  std::lock_guard<std::mutex> lock(mu_);
  return conn_ && PQstatus(conn_) == CONNECTION_OK;
}

DbResult Db::exec_locked(const std::string& sql, const std::vector<std::string>& params) {
  DbResult r;
  if (!connect_locked(&r.error)) {
    r.error = "database unreachable: " + r.error;
    return r;
  }
  std::vector<const char*> values;
  for (const auto& p : params) values.push_back(p.c_str());
  PGresult* res = PQexecParams(conn_, sql.c_str(), static_cast<int>(values.size()), nullptr,
                               values.data(), nullptr, nullptr, 0);
  ExecStatusType st = PQresultStatus(res);
  if (st == PGRES_COMMAND_OK || st == PGRES_TUPLES_OK) {
    r.ok = true;
    for (int i = 0; i < PQntuples(res); ++i) {
      std::vector<std::string> row;
      for (int k = 0; k < PQnfields(res); ++k) row.emplace_back(PQgetvalue(res, i, k));
      r.rows.push_back(std::move(row));
    }
  } else {
    r.error = trim(PQerrorMessage(conn_));
  }
  PQclear(res);
  if (!r.ok && PQstatus(conn_) != CONNECTION_OK) {
    PQfinish(conn_);  // reconnect next time
    conn_ = nullptr;
  }
  return r;
}

DbResult Db::exec(const std::string& sql, const std::vector<std::string>& params) {
  std::lock_guard<std::mutex> lock(mu_);
  return exec_locked(sql, params);
}

DbResult Db::exec_tx(const std::vector<DbStatement>& statements) {
  std::lock_guard<std::mutex> lock(mu_);
  DbResult r = exec_locked("BEGIN", {});
  if (!r.ok) return r;
  for (const auto& s : statements) {
    r = exec_locked(s.sql, s.params);
    if (!r.ok) {
      if (conn_) exec_locked("ROLLBACK", {});
      return r;
    }
  }
  return exec_locked("COMMIT", {});
}

}  // namespace hft
