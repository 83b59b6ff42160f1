#pragma once
// SHA-256 (FIPS 180-4) with an exportable state, so that a hash can be continued on
// another rank: ranks hash their contiguous shards in turn and pass the state along,
// which yields the plain SHA-256 of the whole dataset without any rank reading all of it.
#include <array>
#include <cstddef>
#include <cstdint>
#include <string>

namespace hpctrain {

class Sha256 {
 public:
  // Fixed-size, trivially copyable snapshot of an unfinished hash.
  struct State {
    std::array<std::uint32_t, 8> h;
    std::array<std::uint8_t, 64> pending;
    std::uint64_t total_bytes;
    std::uint32_t pending_bytes;
  };

  Sha256();
  explicit Sha256(const State& state) : state_(state) {}

  void update(const void* data, std::size_t size);
  std::array<std::uint8_t, 32> digest() const;
  std::string hex_digest() const;
  const State& state() const { return state_; }

  static std::string hex(const void* data, std::size_t size);

 private:
  // Compresses `count` consecutive 64-byte blocks into state_.h.
  void compress(const std::uint8_t* blocks, std::size_t count);
  State state_;
};

// For tests (and for timing the fallback): true makes every Sha256 use the portable scalar
// code even where the CPU has the SHA extensions; false (the default) restores the choice by
// CPU. Both give identical digests and states, so this may be flipped between updates.
void sha256_use_portable(bool portable);

}  // namespace hpctrain
