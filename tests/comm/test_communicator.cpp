#include <gtest/gtest.h>

#include <numeric>

#include "comm/Communicator.hpp"
#include "util/Error.hpp"

using namespace hpctrain;

TEST(Communicator, AllreduceSumsAcrossRanks) {
  Communicator world = Communicator::world();
  std::vector<double> v{1.0 * world.rank(), 1.0};
  world.allreduce_sum(v.data(), v.size());
  const int p = world.size();
  EXPECT_DOUBLE_EQ(v[0], p * (p - 1) / 2.0);
  EXPECT_DOUBLE_EQ(v[1], p);
}

TEST(Communicator, SplitFormsSubGroups) {
  Communicator world = Communicator::world();
  Communicator half = world.split(world.rank() % 2, world.rank());
  EXPECT_EQ(half.size(), (world.size() + 1 - world.rank() % 2) / 2);
  std::int64_t one = 1;
  half.allreduce_sum(&one, 1);
  EXPECT_EQ(one, half.size());
}

TEST(Communicator, AlltoallvDeliversEachRanksBytes) {
  Communicator world = Communicator::world();
  const int p = world.size(), me = world.rank();
  // Rank r sends (r + 1) bytes of value (r * 16 + d) to rank d.
  std::vector<std::int64_t> send_counts(p, me + 1), recv_counts(p);
  for (int r = 0; r < p; ++r) recv_counts[r] = r + 1;
  std::vector<std::uint8_t> send, recv(static_cast<std::size_t>(p * (p + 1) / 2));
  for (int d = 0; d < p; ++d) send.insert(send.end(), me + 1, static_cast<std::uint8_t>(me * 16 + d));
  world.alltoallv(send.data(), send_counts, recv.data(), recv_counts);
  std::size_t at = 0;
  for (int r = 0; r < p; ++r) {
    for (int i = 0; i <= r; ++i) EXPECT_EQ(recv[at++], static_cast<std::uint8_t>(r * 16 + me));
  }
}

TEST(CollectiveCheck, OneFailingRankFailsEveryRankWithItsMessage) {
  Communicator world = Communicator::world();
  const int failing = world.size() - 1;
  try {
    collective_check(world, [&] {
      if (world.rank() == failing) throw DataError("shard " + std::to_string(failing) + " is bad");
    });
    FAIL() << "expected a CollectiveError on rank " << world.rank();
  } catch (const CollectiveError& e) {
    EXPECT_EQ(e.origin_rank(), failing);
    EXPECT_EQ(std::string(e.what()), "shard " + std::to_string(failing) + " is bad");
    EXPECT_EQ(e.exit_code(), 3);
  }
  EXPECT_NO_THROW(collective_check(world, [] {}));
}
