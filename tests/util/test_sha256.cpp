#include <gtest/gtest.h>

#include <algorithm>
#include <cstdint>
#include <random>
#include <string>
#include <vector>

#include "util/Sha256.hpp"

using hpctrain::Sha256;

namespace {

// Forces the portable code for its lifetime, so a failing test cannot leave it forced. Where the
// CPU lacks the SHA extensions both paths are the portable one and the comparisons below hold
// trivially; the known vectors still check that code.
struct PortableOnly {
  PortableOnly() { hpctrain::sha256_use_portable(true); }
  ~PortableOnly() { hpctrain::sha256_use_portable(false); }
};

std::vector<std::uint8_t> random_bytes(std::size_t size, std::uint32_t seed) {
  std::mt19937 rng(seed);
  std::vector<std::uint8_t> out(size);
  for (auto& byte : out) byte = static_cast<std::uint8_t>(rng());
  return out;
}

// Feeds `data` in pieces of random size, mostly not multiples of 64, some of them tiny, so that
// both the pending buffer and runs of whole blocks are used.
std::string hash_in_pieces(const std::vector<std::uint8_t>& data, std::uint32_t seed) {
  std::mt19937 rng(seed);
  Sha256 h;
  std::size_t pos = 0;
  while (pos < data.size()) {
    const std::size_t piece = std::min<std::size_t>(data.size() - pos, rng() % 4 == 0 ? rng() % 70 : rng() % 200000);
    h.update(data.data() + pos, piece);
    pos += piece;
  }
  return h.hex_digest();
}

void expect_known_vectors() {
  // FIPS 180-4 examples.
  EXPECT_EQ(Sha256::hex("", 0), "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
  EXPECT_EQ(Sha256::hex("abc", 3), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
  const std::string two_blocks = "abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq";
  EXPECT_EQ(Sha256::hex(two_blocks.data(), two_blocks.size()),
            "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1");
  const std::string million(1000000, 'a');
  EXPECT_EQ(Sha256::hex(million.data(), million.size()),
            "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0");
}

}  // namespace

TEST(Sha256, KnownVectors) {
  expect_known_vectors();
  PortableOnly portable;
  expect_known_vectors();
}

TEST(Sha256, ContinuingFromAnExportedStateEqualsOneHash) {
  std::string data;
  for (int i = 0; i < 1000; ++i) data += static_cast<char>(i * 7);
  for (std::size_t cut : {0u, 1u, 63u, 64u, 65u, 500u, 999u, 1000u}) {
    Sha256 first;
    first.update(data.data(), cut);
    Sha256 second(first.state());  // as received by the next rank
    second.update(data.data() + cut, data.size() - cut);
    EXPECT_EQ(second.hex_digest(), Sha256::hex(data.data(), data.size())) << "cut at " << cut;
  }
}

TEST(Sha256, BothPathsAgreeOnRandomDataOfManyLengths) {
  const auto data = random_bytes(1007, 1);
  for (std::size_t size = 0; size <= 1000; ++size) {
    const std::uint8_t* start = data.data() + size % 7;  // not always aligned
    std::string portable_hex;
    {
      PortableOnly portable;
      portable_hex = Sha256::hex(start, size);
    }
    ASSERT_EQ(Sha256::hex(start, size), portable_hex) << "size " << size;
    const std::vector<std::uint8_t> piece(start, start + size);
    ASSERT_EQ(hash_in_pieces(piece, static_cast<std::uint32_t>(size)), portable_hex) << "size " << size;
  }
}

TEST(Sha256, BothPathsAgreeOnMegabytesFedInOddPieces) {
  for (std::size_t size : {std::size_t{3} << 20, (std::size_t{5} << 20) + 17}) {
    const auto data = random_bytes(size, static_cast<std::uint32_t>(size));
    std::string portable_hex;
    {
      PortableOnly portable;
      portable_hex = hash_in_pieces(data, 2);
    }
    EXPECT_EQ(hash_in_pieces(data, 3), portable_hex) << "size " << size;
    EXPECT_EQ(Sha256::hex(data.data(), data.size()), portable_hex) << "size " << size;
  }
}

TEST(Sha256, StateExportedFromOnePathContinuesOnTheOther) {
  const auto data = random_bytes(5000, 4);
  const std::string whole = Sha256::hex(data.data(), data.size());
  for (bool first_portable : {true, false}) {
    for (std::size_t cut : {0u, 1u, 63u, 64u, 65u, 640u, 1001u, 4999u, 5000u}) {
      hpctrain::sha256_use_portable(first_portable);
      Sha256 first;
      first.update(data.data(), cut);
      hpctrain::sha256_use_portable(!first_portable);
      Sha256 second(first.state());  // as received by the next rank, running the other code
      second.update(data.data() + cut, data.size() - cut);
      const std::string continued = second.hex_digest();
      hpctrain::sha256_use_portable(false);
      EXPECT_EQ(continued, whole) << "cut at " << cut << ", first part portable: " << first_portable;
    }
  }
}
