#pragma once
// Error types shared by every layer. Each carries a message a user can act on.
#include <stdexcept>
#include <string>

namespace hpctrain {

// Base of every error hpctrain reports to the user. The top level prints what() once.
class Error : public std::runtime_error {
 public:
  explicit Error(const std::string& message) : std::runtime_error(message) {}
};

// A problem with the configuration (file, key, override).
class ConfigError : public Error {
 public:
  using Error::Error;
};

// A problem with an input data file (missing, malformed, wrong layout, bad hash).
class DataError : public Error {
 public:
  using Error::Error;
};

// A failed call into MPI, HDF5 or the system.
class RuntimeFailure : public Error {
 public:
  using Error::Error;
};

// Wrong command-line usage.
class UsageError : public Error {
 public:
  using Error::Error;
};

}  // namespace hpctrain
