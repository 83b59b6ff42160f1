// Asynchronous successive halving and the asynchronous search's record, as pure state
// machines fed hand-made arrival sequences: rung budgets, the promotion rule (the better
// floor(n / eta) of a rung's results so far, highest rung first, failed trials never), and
// the events that replay a search (tpe and asha) into the same state.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <map>
#include <vector>

#include "experiment/Asha.hpp"
#include "experiment/AsyncSearch.hpp"

using namespace hpctrain;
namespace json = boost::json;

namespace {

RungScore scored(int trial, double accuracy) {
  RungScore s;
  s.trial = trial;
  s.any_ok = std::isfinite(accuracy);
  s.score = accuracy;
  s.complete = s.any_ok;
  return s;
}

AshaJob take(AshaLadder& ladder) {
  const auto job = ladder.next();
  EXPECT_TRUE(job.has_value());
  return job.value_or(AshaJob{-1, -1});
}

TaskOutcome outcome(const SearchTask& t, double accuracy) {
  TaskOutcome o;
  o.trial = t.trial;
  o.fold = -1;
  o.status = TaskStatus::Ok;
  o.metrics = json::object{{"count", 10}, {"accuracy", accuracy}};
  return o;
}

// A score for a trial's assignments at a rung: a smooth function of optimizer.lr that grows
// with the rung's epochs.
double objective(const json::object& a, const SearchTask& t) {
  const double x = a.at("optimizer.lr").as_double();
  return 1.0 / (1.0 + (x - 0.3) * (x - 0.3)) - 0.1 / static_cast<double>(t.rung + 1);
}

// Runs `search` with two groups to the end; the group that gets the next result alternates
// by a fixed pattern, so the arrival order is fixed and not FIFO. Returns the outcomes by task.
std::map<std::tuple<int, int, std::size_t>, TaskOutcome> drive(AsyncSearch& search, std::size_t stop_after = 1u << 30) {
  std::map<std::tuple<int, int, std::size_t>, TaskOutcome> got;
  std::vector<SearchTask> running;
  std::size_t arrivals = 0, step = 0;
  while (arrivals < stop_after) {
    SearchTask t;
    while (running.size() < 2 && search.next(t) == AsyncSearch::Next::Task) running.push_back(t);
    if (running.empty()) break;
    const std::size_t pick = (step++ % 3 == 1 && running.size() > 1) ? 1 : 0;  // the later one first now and then
    const SearchTask done = running[pick];
    running.erase(running.begin() + static_cast<std::ptrdiff_t>(pick));
    const TaskOutcome o = outcome(done, objective(search.trials().at(done.trial).assignments, done));
    got[{done.trial, done.rung, done.split}] = o;
    search.arrive(done, o);
    ++arrivals;
  }
  return got;
}

AsyncSearchSetup setup(const std::string& method) {
  AsyncSearchSetup s;
  s.method = method;
  s.space = parse_search_space(R"({"optimizer.lr": {"uniform": [0, 1]}})");
  s.tpe_trials = 12;
  s.tpe.startup = 4;
  s.trials = random_trials(s.space, 9, 11);
  s.eta = 3;
  s.epochs = asha_rung_epochs(1, 3, 9);
  s.seed = 11;
  s.metric = "accuracy";
  return s;
}

}  // namespace

TEST(Asha, RungEpochsGrowByEtaUpToTheCap) {
  EXPECT_EQ(asha_rung_epochs(1, 2, 4), (std::vector<std::int64_t>{1, 2, 4}));
  EXPECT_EQ(asha_rung_epochs(1, 3, 4), (std::vector<std::int64_t>{1, 3, 4}));
  EXPECT_EQ(asha_rung_epochs(2, 2, 1), (std::vector<std::int64_t>{1}));
}

TEST(Asha, PromotesAsSoonAsARungHasEnoughResults) {
  AshaLadder ladder({0, 1, 2, 3, 4, 5}, asha_rung_epochs(1, 2, 4), 2, false);
  // Two groups start trials 0 and 1.
  EXPECT_EQ(take(ladder).trial, 0);
  EXPECT_EQ(take(ladder).trial, 1);
  ladder.report(0, scored(0, 0.5));
  // One result at rung 0: floor(1/2) = 0 may go on, so a new trial starts.
  AshaJob j = take(ladder);
  EXPECT_EQ(j.trial, 2);
  EXPECT_EQ(j.rung, 0);
  ladder.report(0, scored(1, 0.7));
  // Two results: the better one (trial 1) goes on at once, without waiting for the rung.
  j = take(ladder);
  EXPECT_EQ(j.trial, 1);
  EXPECT_EQ(j.rung, 1);
  ladder.report(0, scored(2, NAN));  // trial 2 failed: a result, never promoted
  j = take(ladder);
  EXPECT_EQ(j.trial, 3);  // three results: floor(3/2) = 1, already promoted
  ladder.report(1, scored(1, 0.8));
  ladder.report(0, scored(3, 0.9));
  // Four results at rung 0: trials 3 and 1 may go on; 3 is new there. Rung 1 has one result.
  j = take(ladder);
  EXPECT_EQ(j.trial, 3);
  EXPECT_EQ(j.rung, 1);
  ladder.report(1, scored(3, 0.95));
  // Rung 1 now has two results: the better (3) goes to rung 2 before anything at rung 0.
  j = take(ladder);
  EXPECT_EQ(j.trial, 3);
  EXPECT_EQ(j.rung, 2);
  EXPECT_EQ(take(ladder).trial, 4);
  EXPECT_EQ(take(ladder).trial, 5);
  EXPECT_FALSE(ladder.next().has_value());  // every trial started, nothing promotable: wait
  ASSERT_EQ(ladder.promotions().size(), 3u);
  EXPECT_EQ(ladder.promotions()[0].trial, 1);
  EXPECT_EQ(ladder.promotions()[0].rung_results, 2);
  EXPECT_EQ(ladder.promotions()[2].to_rung, 2);
}

TEST(Asha, LowerIsBetterAndTiesGoToTheLowerTrial) {
  const std::vector<RungScore> r{scored(4, 0.3), scored(2, 0.1), scored(7, 0.1), scored(1, 0.9)};
  EXPECT_EQ(asha_promotable(r, true, 2), (std::vector<int>{2, 7}));
  EXPECT_EQ(asha_promotable(r, false, 3), (std::vector<int>{1}));
  EXPECT_EQ(asha_promotable(r, false, 5), (std::vector<int>{}));
}

TEST(AsyncSearch, AshaRunsEveryTrialAndPromotesTheBest) {
  AsyncSearch search(setup("asha"));
  drive(search);
  SearchTask t;
  EXPECT_EQ(search.next(t), AsyncSearch::Next::Done);
  const json::array rungs = search.rungs_record();
  ASSERT_EQ(rungs.size(), 3u);
  EXPECT_EQ(rungs[0].at("trials").as_array().size(), 9u);
  EXPECT_EQ(rungs[1].at("trials").as_array().size(), 3u);  // floor(9/3)
  EXPECT_EQ(rungs[2].at("trials").as_array().size(), 1u);
  EXPECT_EQ(search.promotions_record().size(), 4u);
}

TEST(AsyncSearch, SameArrivalsSameSearchAndEventsReplayIt) {
  for (const char* method : {"tpe", "asha"}) {
    AsyncSearch a(setup(method)), b(setup(method));
    const auto outcomes = drive(a);
    drive(b);
    EXPECT_EQ(a.events(), b.events()) << method;
    ASSERT_EQ(a.trials().size(), b.trials().size());
    for (std::size_t i = 0; i < a.trials().size(); ++i) EXPECT_EQ(a.trials()[i].assignments, b.trials()[i].assignments);
    if (std::string(method) == "tpe") {
      EXPECT_EQ(a.trials().size(), 12u);
      EXPECT_EQ(a.proposals_record()[11].at("startup"), false);
    }

    // A fresh instance fed the events gives the same trials; the replay checks each start.
    AsyncSearch c(setup(method));
    const auto find = [&](const SearchTask& t) -> const TaskOutcome* {
      const auto it = outcomes.find({t.trial, t.rung, t.split});
      return it == outcomes.end() ? nullptr : &it->second;
    };
    EXPECT_EQ(c.replay(a.events(), find), a.events().size());
    EXPECT_EQ(c.events(), a.events());
    ASSERT_EQ(c.trials().size(), a.trials().size());
    EXPECT_EQ(c.trials().back().assignments, a.trials().back().assignments);
  }
}

TEST(AsyncSearch, AResumeRunsTheInterruptedTasksFirstAndGoesOnAlike) {
  AsyncSearch a(setup("tpe"));
  const auto outcomes = drive(a, 6);
  SearchTask extra;
  ASSERT_EQ(a.next(extra), AsyncSearch::Next::Task);  // interrupted: two tasks running
  ASSERT_EQ(a.running(), 2u);
  AsyncSearch b(setup("tpe"));
  b.replay(a.events(), [&](const SearchTask& t) -> const TaskOutcome* {
    const auto it = outcomes.find({t.trial, t.rung, t.split});
    return it == outcomes.end() ? nullptr : &it->second;
  });
  EXPECT_EQ(b.running(), 2u);
  b.resume();
  EXPECT_EQ(b.running(), 0u);
  SearchTask first, second, third;
  ASSERT_EQ(b.next(first), AsyncSearch::Next::Task);
  ASSERT_EQ(b.next(second), AsyncSearch::Next::Task);
  ASSERT_EQ(b.next(third), AsyncSearch::Next::Task);
  // The two that were running, in the order they started, then a new trial.
  std::vector<int> open;
  for (const auto& e : a.events()) {
    const int trial = static_cast<int>(e.at("trial").as_int64());
    if (e.at("event") == "start") open.push_back(trial);
    if (e.at("event") == "result") open.erase(std::find(open.begin(), open.end(), trial));
  }
  EXPECT_EQ((std::vector<int>{first.trial, second.trial}), open);
  EXPECT_EQ(third.trial, 8);
  EXPECT_EQ(b.events().at(a.events().size()).at("event"), "resume");

  // A replay that meets a start the search would not make is refused.
  json::array bad = a.events();
  bad[0].as_object()["trial"] = 5;
  AsyncSearch c(setup("tpe"));
  EXPECT_THROW(c.replay(bad, [](const SearchTask&) { return nullptr; }), std::exception);
}

TEST(AsyncSearch, ATrialIsScoredWhenItsLastSplitArrives) {
  AsyncSearchSetup s = setup("tpe");
  s.split_count = 2;
  s.tpe_trials = 2;
  AsyncSearch search(s);
  SearchTask a, b, c;
  ASSERT_EQ(search.next(a), AsyncSearch::Next::Task);
  ASSERT_EQ(search.next(b), AsyncSearch::Next::Task);
  EXPECT_EQ(a.trial, 0);  // both splits of trial 0 before trial 1
  EXPECT_EQ(b.trial, 0);
  EXPECT_EQ(b.split, 1u);
  search.arrive(b, outcome(b, 0.5));
  EXPECT_TRUE(search.scored().empty());
  ASSERT_EQ(search.next(c), AsyncSearch::Next::Task);
  EXPECT_EQ(c.trial, 1);
  search.arrive(a, outcome(a, 0.7));
  ASSERT_EQ(search.scored().size(), 1u);
  EXPECT_NEAR(search.scored()[0].second.score, 0.6, 1e-12);  // the mean over the splits
  SearchTask d;
  ASSERT_EQ(search.next(d), AsyncSearch::Next::Task);  // trial 1's second split
  EXPECT_EQ(search.next(a), AsyncSearch::Next::Wait);  // the budget is spent, two tasks run
  search.arrive(c, outcome(c, 0.1));
  search.arrive(d, outcome(d, 0.1));
  EXPECT_EQ(search.next(a), AsyncSearch::Next::Done);
}
