// Prometheus metrics: counters, gauges and histograms, rendered in the text exposition
// format (version 0.0.4) at GET /api/v1/metrics.
#pragma once
#include <cstdint>
#include <map>
#include <mutex>
#include <string>
#include <vector>

namespace hft {

class Histogram {
 public:
  explicit Histogram(std::vector<double> bounds);
  void observe(double seconds);
  // Appends the _bucket/_sum/_count lines; labels is "" or `handler="x"`.
  void render(std::string& out, const std::string& name, const std::string& labels) const;

 private:
  std::vector<double> bounds_;
  std::vector<uint64_t> counts_;  // non-cumulative, one per bound
  uint64_t count_ = 0;
  double sum_ = 0;
};

class Metrics {
 public:
  void observe_request(const std::string& handler, int status, double seconds);
  void observe_order(const std::string& exchange, bool paper, double seconds);
  void count_fill(const std::string& exchange, bool paper);
  void count_error(const std::string& component);
  // gauges are set by the engine before rendering
  std::string render(const std::map<std::string, double>& gauges) const;

 private:
  mutable std::mutex mu_;
  std::map<std::string, Histogram> request_latency_;         // by handler
  std::map<std::string, uint64_t> requests_;                 // labels -> count
  Histogram order_latency_{{0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05,
                            0.1, 0.25, 1}};
  std::map<std::string, uint64_t> orders_;                   // labels -> count
  std::map<std::string, uint64_t> fills_;                    // labels -> count
  std::map<std::string, uint64_t> errors_;                   // component -> count
};

Metrics& metrics();
std::string prom_escape(const std::string& label_value);

}  // namespace hft
