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

// One measured point of a bench allreduce file: the time of one bucket of s bytes.
struct Sample {
  double bytes = 0, seconds = 0;
};

// One link class: a message of s bytes between two ranks takes alpha + s / beta. `fit` says
// where alpha and beta came from (the command line, or a bench allreduce file and its sizes).
// From a file, `messages` holds its measured curve as time per ring message (a bench of Pb
// ranks: bucket bytes / Pb, time / (2 (Pb - 1))), which sizes inside it use instead of the line.
struct Link {
  double alpha = 0;  // s
  double beta = 1;   // bytes / s
  std::string fit = "given";
  json::array sizes;             // the message sizes the fit used
  double worst_residual = 0;     // largest |fitted / measured - 1| over them
  std::vector<Sample> messages;  // by bytes, ascending

  // The time of one ring message of x bytes: interpolated log-log on the measured curve
  // inside it, alpha + x / beta outside.
  double message(double x) const {
    if (messages.size() < 2 || x < messages.front().bytes || x > messages.back().bytes) return alpha + x / beta;
    std::size_t i = 1;
    while (i + 1 < messages.size() && messages[i].bytes < x) ++i;
    const Sample &a = messages[i - 1], &b = messages[i];
    const double f = std::log(x / a.bytes) / std::log(b.bytes / a.bytes);
    return std::exp(std::log(a.seconds) + f * (std::log(b.seconds) - std::log(a.seconds)));
  }
};

// The measured step of one profile run, per step and per rank.
struct Profile {
  std::string path;
  double data = 0, forward = 0, backward = 0, optimizer = 0;  // s
  int ranks = 1, nodes = 1;
  double global_batch = 1, parameters = 0, bucket_mb = 25;
  int ranks_per_node() const { return std::max(1, ranks / std::max(1, nodes)); }
  double rows() const { return global_batch / ranks; }  // per-rank batch
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
  p.path = file;
  auto ms = [&](const char* phase) { return number_at(r, {"time_per_step_ms", phase, "mean"}, file) / 1e3; };
  p.data = ms("data");
  p.forward = ms("forward");
  p.backward = ms("backward");
  p.optimizer = ms("optimizer");
  p.ranks = static_cast<int>(number_at(r, {"world", "size"}, file));
  const auto* world = r.as_object().at("world").if_object();
  if (world != nullptr && world->contains("nodes")) p.nodes = static_cast<int>(number_at(r, {"world", "nodes"}, file));
  p.global_batch = number_at(r, {"training", "global_batch"}, file);
  p.parameters = number_at(r, {"model", "parameters"}, file);
  p.bucket_mb = number_at(r, {"model", "bucket_mb"}, file);
  return p;
}

// The profile measured with `per_node` ranks per node; else the one with the most ranks per
// node below it; else the one with the fewest.
const Profile& profile_for(const std::vector<Profile>& ps, int per_node) {
  const Profile* best = nullptr;
  for (const auto& p : ps) {
    if (p.ranks_per_node() <= per_node && (best == nullptr || p.ranks_per_node() > best->ranks_per_node())) best = &p;
  }
  if (best != nullptr) return *best;
  return *std::min_element(ps.begin(), ps.end(),
                           [](const Profile& a, const Profile& b) { return a.ranks_per_node() < b.ranks_per_node(); });
}

// Per-bucket samples of `bench allreduce --json`: the trainer's own path (the `hpctrain_us`
// column: the bucketed reducer on its communication thread, as training runs it) where the
// file has it, else plain MPI_Allreduce; a row of k buckets counts as k buckets of bytes / k.
std::vector<Sample> read_samples(const json::value& v, const std::string& file, std::string& column) {
  const auto* rows = v.as_object().if_contains("rows");
  if (rows == nullptr || !rows->is_array() || rows->as_array().size() < 2) {
    throw DataError(file + ": needs a bench allreduce --json of at least 2 ranks and 2 sizes");
  }
  column = rows->as_array()[0].as_object().contains("hpctrain_us") ? "hpctrain_us" : "mpi_us";
  std::vector<Sample> out;
  for (const auto& row : rows->as_array()) {
    const auto* o = row.if_object();
    const double k = o != nullptr && o->contains("buckets") ? std::max(1.0, number_at(row, {"buckets"}, file)) : 1.0;
    out.push_back({number_at(row, {"bytes"}, file) / k, number_at(row, {column.c_str()}, file) * 1e-6 / k});
  }
  return out;
}

// Fits t(s) = c0 + c1 s to the samples within a factor of 4 of the run's bucket size S (at
// least the two nearest): a local fit, relative residuals weighted by
// exp(-(ln(s/S) / ln 2)^2 / 2), so that a size measured at S dominates and its neighbours set
// the slope; then inverts the ring: t = 2(P-1) alpha + 2(P-1)/P s / beta. Measured times are
// not one line over sizes: over shared memory here 3.7 MB took 0.5 ms and 15 MB 29 ms, and
// through a tc token bucket small messages pass in its burst while large ones are shaped; a
// straight line over 64 KiB..16 MiB mispredicted a 10 Gbit/s link by 18%. The line serves
// message sizes outside the measured ones; inside, Link::message interpolates the measurements.
Link fit_allreduce(const std::string& file, double bucket_bytes) {
  const json::value v = read_json(file);
  const double p = number_at(v, {"ranks"}, file);
  if (p < 2) throw DataError(file + ": needs a bench allreduce --json of at least 2 ranks and 2 sizes");
  std::string column;
  std::vector<Sample> all = read_samples(v, file, column);
  auto distance = [&](const Sample& a) { return std::abs(std::log(a.bytes / bucket_bytes)); };
  std::sort(all.begin(), all.end(), [&](const Sample& a, const Sample& b) { return distance(a) < distance(b); });
  std::vector<Sample> use;
  for (const auto& s : all) {
    if (use.size() < 2 || distance(s) <= std::log(4.5)) use.push_back(s);
  }
  double sw = 0, sx = 0, sy = 0, sxx = 0, sxy = 0;
  for (const auto& s : use) {
    const double near = distance(s) / std::log(2.0);
    const double w = std::exp(-near * near / 2) / std::max(s.seconds * s.seconds, 1e-18);
    sw += w;
    sx += w * s.bytes;
    sy += w * s.seconds;
    sxx += w * s.bytes * s.bytes;
    sxy += w * s.bytes * s.seconds;
  }
  double c1 = (sw * sxy - sx * sy) / std::max(sw * sxx - sx * sx, 1e-300), c0 = (sy - c1 * sx) / sw;
  if (c0 < 0) {  // no latency to fit: a line through 0
    c0 = 0;
    c1 = sxy / std::max(sxx, 1e-300);
  }
  if (c1 <= 0) {  // flat over these sizes: latency only
    c1 = 0;
    c0 = sy / sw;
  }
  Link l;
  l.alpha = c0 / (2 * (p - 1));
  l.beta = c1 > 0 ? 2 * (p - 1) / p / c1 : 1e18;
  l.fit = file + " (" + column + ")";
  for (const auto& s : all) {
    if (s.seconds > 0) l.messages.push_back({s.bytes / p, s.seconds / (2 * (p - 1))});
  }
  std::sort(l.messages.begin(), l.messages.end(), [](const Sample& a, const Sample& b) { return a.bytes < b.bytes; });
  // Rows of several buckets can give one message size twice: keep their mean, one point per size.
  std::vector<Sample> merged;
  for (const auto& m : l.messages) {
    if (!merged.empty() && merged.back().bytes == m.bytes) {
      merged.back().seconds = (merged.back().seconds + m.seconds) / 2;
    } else {
      merged.push_back(m);
    }
  }
  l.messages = std::move(merged);
  std::sort(use.begin(), use.end(), [](const Sample& a, const Sample& b) { return a.bytes < b.bytes; });
  for (const auto& s : use) {
    l.sizes.push_back(s.bytes);
    l.worst_residual = std::max(l.worst_residual, std::abs((c0 + c1 * s.bytes) / s.seconds - 1));
  }
  return l;
}

// A ring allreduce of s bytes over p ranks whose slowest hop is `link`: 2 (p - 1) messages
// of s / p bytes (alpha-beta: 2 (p - 1) alpha + 2 (p - 1)/p s / beta).
double ring_allreduce(double s, int p, const Link& link) {
  if (p <= 1) return 0;
  return 2 * (p - 1) * link.message(s / p);
}

// comm.hierarchical on equal nodes (the 2-D ring, comm/HierarchicalSum.hpp): a ring
// reduce-scatter and all-gather within the node (one ring allreduce's messages) around the
// peers' rings among the nodes, whose R rings of s/R share the node's link like one of s.
double hierarchical_allreduce(double s, int nodes, int per_node, const Link& inter, const Link& intra) {
  return ring_allreduce(s, per_node, intra) + ring_allreduce(s, nodes, inter);
}

// comm.hierarchical as training resolves it (make_hierarchical_sum): on, or auto with several
// ranks per node (across nodes; one node sums flat either way).
bool hierarchical(const ScalingArguments& a) {
  return a.hierarchical == "on" || (a.hierarchical == "auto" && a.ranks_per_node > 1);
}

struct Prediction {
  int nodes = 1, ranks = 1;
  const Profile* profile = nullptr;
  double per_rank_batch = 0, compute = 0, comm = 0, exposed = 0, step = 0, samples_per_s = 0, efficiency = 0;
};

// Buckets become ready evenly over backward (in reverse order) and are reduced one after
// another on the communication thread: exposed = what remains after backward ends.
double exposed_after_backward(double backward, int buckets, double per_bucket) {
  double end = 0;
  for (int b = 0; b < buckets; ++b) end = std::max(end, backward * (b + 1) / buckets) + per_bucket;
  return std::max(0.0, end - backward);
}

// The gradient's split into the reducer's buckets (equal shares of parameters x 4 bytes).
struct Buckets {
  int count = 1;
  double bytes = 0;  // per bucket
};

Buckets buckets_of(const Profile& p, double bucket_mb) {
  const double gradient_bytes = p.parameters * 4.0;
  Buckets b;
  b.count = std::max(1, static_cast<int>(std::ceil(gradient_bytes / (bucket_mb * 1048576.0))));
  b.bytes = gradient_bytes / b.count;
  return b;
}

// Per node count: compute from the profile of the same ranks per node (data, forward and
// backward scale with the per-rank batch, the optimizer does not), plus the exposed reduction.
Prediction predict(const ScalingArguments& a, const std::vector<Profile>& ps, int n, const Buckets& b,
                   const Link& inter, const Link& intra) {
  Prediction q;
  q.nodes = n;
  q.ranks = n * a.ranks_per_node;
  q.profile = &profile_for(ps, a.ranks_per_node);
  const Profile& p = *q.profile;
  q.per_rank_batch = a.weak ? p.rows() : ps.front().global_batch / q.ranks;
  const double scale = q.per_rank_batch / p.rows();
  const double backward = p.backward * scale;
  q.compute = (p.data + p.forward) * scale + backward + p.optimizer;
  const double t_bucket = hierarchical(a) && n > 1 ? hierarchical_allreduce(b.bytes, n, a.ranks_per_node, inter, intra)
                                                   : ring_allreduce(b.bytes, q.ranks, n > 1 ? inter : intra);
  q.comm = t_bucket * b.count;
  q.exposed = q.ranks > 1 ? exposed_after_backward(backward, b.count, t_bucket) : 0.0;
  q.step = q.compute + q.exposed;
  q.samples_per_s = q.per_rank_batch * q.ranks / q.step;
  return q;
}

json::object link_json(const Link& l) {
  return json::object{{"alpha_us", l.alpha * 1e6},
                      {"beta_gbs", l.beta / 1e9},
                      {"fit", l.fit},
                      {"fit_bytes", l.sizes},
                      {"fit_worst_residual", l.worst_residual}};
}

void print_links(const Link& inter, const Link& intra, const std::string& reduction) {
  std::printf(
      "links: between nodes alpha %.1f us, beta %.3f GB/s; within a node alpha %.1f us, beta %.3f GB/s; "
      "reduction %s\n",
      inter.alpha * 1e6, inter.beta / 1e9, intra.alpha * 1e6, intra.beta / 1e9, reduction.c_str());
  for (const Link* l : {&inter, &intra}) {
    if (l->sizes.empty()) continue;
    std::printf("  %s: fitted on %zu sizes, %.0f..%.0f bytes per bucket, worst residual %.1f%%\n",
                l == &inter ? "between nodes" : "within a node", l->sizes.size(), l->sizes.front().to_number<double>(),
                l->sizes.back().to_number<double>(), l->worst_residual * 100);
  }
}

}  // namespace

void print_scaling_plan(const ScalingArguments& a) {
  if (a.nodes.empty() || a.ranks_per_node < 1)
    throw UsageError("plan: --nodes needs node counts and --ranks-per-node >= 1");
  std::vector<Profile> ps;
  for (const auto& f : a.profiles) ps.push_back(read_profile(f));
  const Profile& first = ps.front();
  const Buckets b = buckets_of(first, a.bucket_mb > 0 ? a.bucket_mb : first.bucket_mb);
  Link inter, intra;
  inter.alpha = a.link_latency_us * 1e-6;
  inter.beta = a.link_gbps * 1e9 / 8;
  intra.alpha = a.node_latency_us * 1e-6;
  intra.beta = a.node_gbps * 1e9 / 8;
  if (!a.inter_json.empty()) inter = fit_allreduce(a.inter_json, b.bytes);
  if (!a.intra_json.empty()) intra = fit_allreduce(a.intra_json, b.bytes);
  std::vector<Prediction> out;
  for (int n : a.nodes) out.push_back(predict(a, ps, n, b, inter, intra));
  // Efficiency against one rank alone at the same work, from the profile of fewest ranks per node.
  const Profile& solo = profile_for(ps, 1);
  const double solo_rows = a.weak ? solo.rows() : first.global_batch;
  const double one_rank_rate =
      solo_rows / ((solo.data + solo.forward + solo.backward) * solo_rows / solo.rows() + solo.optimizer);
  const std::string reduction = hierarchical(a) ? "hierarchical" : "flat ring";
  std::printf("plan --nodes: %s scaling of CONFIG (global batch %.0f, %.0f parameters, %d bucket(s) of %.0f bytes)\n",
              a.weak ? "weak" : "strong", first.global_batch, first.parameters, b.count, b.bytes);
  json::array profiles;
  for (const auto& p : ps) {
    std::printf("profile: %s (%d rank(s) per node, per-rank batch %.1f)\n", p.path.c_str(), p.ranks_per_node(),
                p.rows());
    profiles.push_back(
        json::object{{"path", p.path}, {"ranks_per_node", p.ranks_per_node()}, {"per_rank_batch", p.rows()}});
  }
  print_links(inter, intra, reduction);
  std::printf("%6s %6s %10s %11s %9s %11s %9s %12s %10s\n", "nodes", "ranks", "rank batch", "compute ms", "comm ms",
              "exposed ms", "step ms", "samples/s", "efficiency");
  json::array rows;
  for (auto& q : out) {
    q.efficiency = q.samples_per_s / (one_rank_rate * q.ranks);
    std::printf("%6d %6d %10.1f %11.2f %9.2f %11.2f %9.2f %12.0f %10.3f\n", q.nodes, q.ranks, q.per_rank_batch,
                q.compute * 1e3, q.comm * 1e3, q.exposed * 1e3, q.step * 1e3, q.samples_per_s, q.efficiency);
    rows.push_back(json::object{{"nodes", q.nodes},
                                {"ranks", q.ranks},
                                {"profile", q.profile->path},
                                {"per_rank_batch", q.per_rank_batch},
                                {"compute_ms", q.compute * 1e3},
                                {"comm_ms", q.comm * 1e3},
                                {"exposed_ms", q.exposed * 1e3},
                                {"step_ms", q.step * 1e3},
                                {"samples_per_s", q.samples_per_s},
                                {"efficiency", q.efficiency}});
  }
  if (a.json_path.empty()) return;
  write_json_file(a.json_path, json::object{{"model", "alpha-beta ring allreduce, buckets overlapped with backward"},
                                            {"profile", first.path},
                                            {"profiles", profiles},
                                            {"scaling", a.weak ? "weak" : "strong"},
                                            {"ranks_per_node", a.ranks_per_node},
                                            {"global_batch", first.global_batch},
                                            {"parameters", first.parameters},
                                            {"reduction", hierarchical(a) ? "hierarchical" : "flat"},
                                            {"inter", link_json(inter)},
                                            {"intra", link_json(intra)},
                                            {"buckets", b.count},
                                            {"bucket_bytes", b.bytes},
                                            {"predictions", rows}});
}

}  // namespace hpctrain
