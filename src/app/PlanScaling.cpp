#include "app/PlanScaling.hpp"

#include <algorithm>
#include <cmath>
#include <cstdio>

#include "app/Measurement.hpp"
#include "util/Error.hpp"
#include "util/Files.hpp"
#include "util/Json.hpp"

namespace hpctrain {
namespace json = boost::json;
namespace {

// One link class: a message of s bytes between two ranks takes alpha + s / beta.
struct Link {
  double alpha = 0;  // s
  double beta = 1;   // bytes / s
};

// The measured step of the profile run, per step and per rank.
struct Profile {
  double data = 0, forward = 0, backward = 0, optimizer = 0;  // s
  int ranks = 1;
  double global_batch = 1, parameters = 0, bucket_mb = 25;
};

// A JSON file the model reads; DataError naming it when it cannot be read or parsed.
json::value read_json(const std::string& file) {
  std::string text;
  try {
    text = read_file(file);
  } catch (const RuntimeFailure& e) {
    throw DataError(e.what());
  }
  return parse_json_or_throw(text, file);
}

double number_at(const json::value& v, std::initializer_list<const char*> path, const std::string& file) {
  const json::value* at = &v;
  std::string where;
  for (const char* key : path) {
    where += std::string(where.empty() ? "" : ".") + key;
    const auto* o = at->if_object();
    if (o == nullptr || !o->contains(key)) throw DataError(file + ": no " + where + " (is it a report.json?)");
    at = &o->at(key);
  }
  if (!at->is_number()) throw DataError(file + ": " + where + " is not a number");
  return at->to_number<double>();
}

Profile read_profile(const std::string& file) {
  const json::value r = read_json(file);
  Profile p;
  auto ms = [&](const char* phase) { return number_at(r, {"time_per_step_ms", phase, "mean"}, file) / 1e3; };
  p.data = ms("data");
  p.forward = ms("forward");
  p.backward = ms("backward");
  p.optimizer = ms("optimizer");
  p.ranks = static_cast<int>(number_at(r, {"world", "size"}, file));
  p.global_batch = number_at(r, {"training", "global_batch"}, file);
  p.parameters = number_at(r, {"model", "parameters"}, file);
  p.bucket_mb = number_at(r, {"model", "bucket_mb"}, file);
  return p;
}

// Fits t(S) = c0 + c1 S to the MPI_Allreduce rows of `bench allreduce --json` (least squares)
// and inverts the ring: t = 2(P-1) alpha + 2(P-1)/P S / beta.
Link fit_allreduce(const std::string& file) {
  const json::value v = read_json(file);
  const double p = number_at(v, {"ranks"}, file);
  const auto* rows = v.as_object().if_contains("rows");
  if (p < 2 || rows == nullptr || !rows->is_array() || rows->as_array().size() < 2) {
    throw DataError(file + ": needs a bench allreduce --json of at least 2 ranks and 2 sizes");
  }
  double n = 0, sx = 0, sy = 0, sxx = 0, sxy = 0;
  for (const auto& row : rows->as_array()) {
    const double x = number_at(row, {"bytes"}, file), y = number_at(row, {"mpi_us"}, file) * 1e-6;
    n += 1;
    sx += x;
    sy += y;
    sxx += x * x;
    sxy += x * y;
  }
  const double c1 = (n * sxy - sx * sy) / std::max(n * sxx - sx * sx, 1e-30), c0 = (sy - c1 * sx) / n;
  Link l;
  l.alpha = std::max(0.0, c0) / (2 * (p - 1));
  l.beta = c1 > 0 ? 2 * (p - 1) / p / c1 : 1e18;
  return l;
}

// A ring allreduce of s bytes over p ranks whose slowest hop is `link`.
double ring_allreduce(double s, int p, const Link& link) {
  if (p <= 1) return 0;
  return 2 * (p - 1) * link.alpha + 2.0 * (p - 1) / p * s / link.beta;
}

// comm.hierarchical: reduce within the node (ring reduce-scatter + gather to the leader),
// allreduce among the node leaders, broadcast within the node (pipelined).
double hierarchical_allreduce(double s, int nodes, int per_node, const Link& inter, const Link& intra) {
  const double in_node = per_node > 1 ? (per_node - 1) * intra.alpha + s / intra.beta : 0.0;
  return 2 * in_node + ring_allreduce(s, nodes, inter);
}

struct Prediction {
  int nodes = 1, ranks = 1;
  double per_rank_batch = 0, compute = 0, comm = 0, exposed = 0, step = 0, samples_per_s = 0, efficiency = 0;
};

// Buckets become ready evenly over backward (in reverse order) and are reduced one after
// another on the communication thread: exposed = what remains after backward ends.
double exposed_after_backward(double backward, int buckets, double per_bucket) {
  double end = 0;
  for (int b = 0; b < buckets; ++b) end = std::max(end, backward * (b + 1) / buckets) + per_bucket;
  return std::max(0.0, end - backward);
}

}  // namespace

void print_scaling_plan(const ScalingArguments& a) {
  if (a.nodes.empty() || a.ranks_per_node < 1)
    throw UsageError("plan: --nodes needs node counts and --ranks-per-node >= 1");
  const Profile p = read_profile(a.profile);
  Link inter{a.link_latency_us * 1e-6, a.link_gbps * 1e9 / 8};
  Link intra{a.node_latency_us * 1e-6, a.node_gbps * 1e9 / 8};
  if (!a.inter_json.empty()) inter = fit_allreduce(a.inter_json);
  if (!a.intra_json.empty()) intra = fit_allreduce(a.intra_json);
  const double bucket_bytes = (a.bucket_mb > 0 ? a.bucket_mb : p.bucket_mb) * 1048576.0;
  const double gradient_bytes = p.parameters * 4.0;
  const int buckets = std::max(1, static_cast<int>(std::ceil(gradient_bytes / bucket_bytes)));
  const double per_bucket_bytes = gradient_bytes / buckets;
  // Per sample: data, forward and backward scale with the per-rank batch; the optimizer does not.
  const double profile_rows = p.global_batch / p.ranks;
  const double data_per_row = p.data / profile_rows, fwd_per_row = p.forward / profile_rows,
               bwd_per_row = p.backward / profile_rows;
  std::vector<Prediction> out;
  for (int n : a.nodes) {
    Prediction q;
    q.nodes = n;
    q.ranks = n * a.ranks_per_node;
    q.per_rank_batch = a.weak ? profile_rows : p.global_batch / q.ranks;
    const double backward = bwd_per_row * q.per_rank_batch;
    q.compute = (data_per_row + fwd_per_row) * q.per_rank_batch + backward + p.optimizer;
    const Link& slowest = n > 1 ? inter : intra;
    const double t_bucket = a.hierarchical == "on" && n > 1
                                ? hierarchical_allreduce(per_bucket_bytes, n, a.ranks_per_node, inter, intra)
                                : ring_allreduce(per_bucket_bytes, q.ranks, slowest);
    q.comm = t_bucket * buckets;
    q.exposed = q.ranks > 1 ? exposed_after_backward(backward, buckets, t_bucket) : 0.0;
    q.step = q.compute + q.exposed;
    q.samples_per_s = q.per_rank_batch * q.ranks / q.step;
    out.push_back(q);
  }
  // Efficiency against the model's own prediction for one rank at the profile's per-rank work.
  const double one_rank_step =
      (data_per_row + fwd_per_row + bwd_per_row) * (a.weak ? profile_rows : p.global_batch) + p.optimizer;
  const double one_rank_rate = (a.weak ? profile_rows : p.global_batch) / one_rank_step;
  std::printf("plan --nodes: %s scaling of %s (%d rank(s), global batch %.0f, %.0f parameters, %d bucket(s))\n",
              a.weak ? "weak" : "strong", a.profile.c_str(), p.ranks, p.global_batch, p.parameters, buckets);
  std::printf(
      "links: between nodes alpha %.1f us, beta %.3f GB/s; within a node alpha %.1f us, beta %.3f GB/s; "
      "reduction %s\n",
      inter.alpha * 1e6, inter.beta / 1e9, intra.alpha * 1e6, intra.beta / 1e9,
      a.hierarchical == "on" ? "hierarchical" : "flat ring");
  std::printf("%6s %6s %10s %11s %9s %11s %9s %12s %10s\n", "nodes", "ranks", "rank batch", "compute ms", "comm ms",
              "exposed ms", "step ms", "samples/s", "efficiency");
  json::array rows;
  for (auto& q : out) {
    q.efficiency = q.samples_per_s / (one_rank_rate * q.ranks);
    std::printf("%6d %6d %10.1f %11.2f %9.2f %11.2f %9.2f %12.0f %10.3f\n", q.nodes, q.ranks, q.per_rank_batch,
                q.compute * 1e3, q.comm * 1e3, q.exposed * 1e3, q.step * 1e3, q.samples_per_s, q.efficiency);
    rows.push_back(json::object{{"nodes", q.nodes},
                                {"ranks", q.ranks},
                                {"per_rank_batch", q.per_rank_batch},
                                {"compute_ms", q.compute * 1e3},
                                {"comm_ms", q.comm * 1e3},
                                {"exposed_ms", q.exposed * 1e3},
                                {"step_ms", q.step * 1e3},
                                {"samples_per_s", q.samples_per_s},
                                {"efficiency", q.efficiency}});
  }
  if (!a.json_path.empty()) {
    write_json_file(
        a.json_path,
        json::object{{"model", "alpha-beta ring allreduce, buckets overlapped with backward"},
                     {"profile", a.profile},
                     {"scaling", a.weak ? "weak" : "strong"},
                     {"ranks_per_node", a.ranks_per_node},
                     {"reduction", a.hierarchical == "on" ? "hierarchical" : "flat"},
                     {"inter", json::object{{"alpha_us", inter.alpha * 1e6}, {"beta_gbs", inter.beta / 1e9}}},
                     {"intra", json::object{{"alpha_us", intra.alpha * 1e6}, {"beta_gbs", intra.beta / 1e9}}},
                     {"buckets", buckets},
                     {"predictions", rows}});
  }
}

}  // namespace hpctrain
