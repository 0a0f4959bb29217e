#include "metrics.hpp"

#include <cstdio>

namespace hft {

Metrics& metrics() {
  static Metrics m;
  return m;
}

std::string prom_escape(const std::string& v) {
  std::string out;
  for (char c : v) {
    if (c == '\\') out += "\\\\";
    else if (c == '"') out += "\\\"";
    else if (c == '\n') out += "\\n";
    else out += c;
  }
  return out;
}

static std::string num(double v) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.9g", v);
  return buf;
}

Histogram::Histogram(std::vector<double> bounds)
    : bounds_(std::move(bounds)), counts_(bounds_.size(), 0) {}

void Histogram::observe(double seconds) {
  for (size_t i = 0; i < bounds_.size(); ++i) {
    if (seconds <= bounds_[i]) {
      ++counts_[i];
      break;
    }
  }
  ++count_;
  sum_ += seconds;
}

void Histogram::render(std::string& out, const std::string& name,
                       const std::string& labels) const {
  std::string sep = labels.empty() ? "" : labels + ",";
  uint64_t cumulative = 0;
  for (size_t i = 0; i < bounds_.size(); ++i) {
    cumulative += counts_[i];
    out += name + "_bucket{" + sep + "le=\"" + num(bounds_[i]) + "\"} " +
           std::to_string(cumulative) + "\n";
  }
  out += name + "_bucket{" + sep + "le=\"+Inf\"} " + std::to_string(count_) + "\n";
  std::string braces = labels.empty() ? "" : "{" + labels + "}";
  out += name + "_sum" + braces + " " + num(sum_) + "\n";
  out += name + "_count" + braces + " " + std::to_string(count_) + "\n";
}

void Metrics::observe_request(const std::string& handler, int status, double seconds) {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = request_latency_.find(handler);
  if (it == request_latency_.end()) {
    it = request_latency_
             .emplace(handler, Histogram({0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1,
                                          0.25, 0.5, 1, 2.5}))
             .first;
  }
  it->second.observe(seconds);
  ++requests_["handler=\"" + prom_escape(handler) + "\",code=\"" + std::to_string(status) + "\""];
}

void Metrics::observe_order(const std::string& exchange, bool paper, double seconds) {
  std::lock_guard<std::mutex> lock(mu_);
  order_latency_.observe(seconds);
  ++orders_["exchange=\"" + prom_escape(exchange) + "\",paper=\"" + (paper ? "true" : "false") +
            "\""];
}

void Metrics::count_fill(const std::string& exchange, bool paper) {
  std::lock_guard<std::mutex> lock(mu_);
  ++fills_["exchange=\"" + prom_escape(exchange) + "\",paper=\"" + (paper ? "true" : "false") +
           "\""];
}

void Metrics::count_error(const std::string& component) {
  std::lock_guard<std::mutex> lock(mu_);
  ++errors_[component];
}

std::string Metrics::render(const std::map<std::string, double>& gauges) const {
  std::lock_guard<std::mutex> lock(mu_);
  std::string out;
  out += "# HELP hft_build_info Build information; the value is always 1.\n";
  out += "# TYPE hft_build_info gauge\n";
  out += std::string("hft_build_info{version=\"") + HFT_VERSION + "\",strategy_metrics=\"" +
         (HFT_WRITE_STRATEGY_METRICS ? "true" : "false") + "\"} 1\n";

  out += "# HELP hft_http_requests_total HTTP requests served, by handler and status code.\n";
  out += "# TYPE hft_http_requests_total counter\n";
  for (const auto& [labels, n] : requests_)
    out += "hft_http_requests_total{" + labels + "} " + std::to_string(n) + "\n";

  out += "# HELP hft_http_request_duration_seconds HTTP request latency.\n";
  out += "# TYPE hft_http_request_duration_seconds histogram\n";
  for (const auto& [handler, h] : request_latency_)
    h.render(out, "hft_http_request_duration_seconds", "handler=\"" + prom_escape(handler) + "\"");

  out += "# HELP hft_order_latency_seconds Time from order decision to exchange acknowledgement.\n";
  out += "# TYPE hft_order_latency_seconds histogram\n";
  order_latency_.render(out, "hft_order_latency_seconds", "");

  out += "# HELP hft_orders_total Orders sent (simulated exchanges), by exchange and paper flag.\n";
  out += "# TYPE hft_orders_total counter\n";
  if (orders_.empty()) out += "hft_orders_total 0\n";
  for (const auto& [labels, n] : orders_)
    out += "hft_orders_total{" + labels + "} " + std::to_string(n) + "\n";

  out += "# HELP hft_fills_total Fills received, by exchange and paper flag.\n";
  out += "# TYPE hft_fills_total counter\n";
  if (fills_.empty()) out += "hft_fills_total 0\n";
  for (const auto& [labels, n] : fills_)
    out += "hft_fills_total{" + labels + "} " + std::to_string(n) + "\n";

  out += "# HELP hft_errors_total Errors logged, by component.\n";
  out += "# TYPE hft_errors_total counter\n";
  if (errors_.empty()) out += "hft_errors_total 0\n";
  for (const auto& [component, n] : errors_)
    out += "hft_errors_total{component=\"" + prom_escape(component) + "\"} " + std::to_string(n) +
           "\n";

  for (const auto& [name, value] : gauges) {
    // name may carry labels: hft_position_quantity{exchange="x",symbol="y"}
    std::string base = name.substr(0, name.find('{'));
    if (name.find('{') == std::string::npos || out.find("# TYPE " + base + " ") == std::string::npos)
      out += "# TYPE " + base + " gauge\n";
    out += name + " " + num(value) + "\n";
  }
  return out;
}

}  // namespace hft
