#include <gtest/gtest.h>

#include <string>

#include "util/Sha256.hpp"

using hpctrain::Sha256;

TEST(Sha256, KnownVectors) {
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
