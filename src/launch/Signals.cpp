#include "launch/Signals.hpp"

#include <signal.h>

#include <atomic>

namespace hpctrain {
namespace {

std::atomic<int> g_signal{0};

extern "C" void record_signal(int signal) {
  g_signal.store(signal, std::memory_order_relaxed);
}

}  // namespace

void install_preemption_handlers() {
  struct sigaction action {};
  action.sa_handler = record_signal;
  sigemptyset(&action.sa_mask);
  // Restart interrupted system calls: MPI and file I/O go on; the loop polls the flag.
  action.sa_flags = SA_RESTART;
  sigaction(SIGTERM, &action, nullptr);
  sigaction(SIGUSR1, &action, nullptr);
}

int preemption_signal() {
  return g_signal.load(std::memory_order_relaxed);
}

const char* signal_name(int signal) {
  switch (signal) {
    case SIGTERM:
      return "SIGTERM";
    case SIGUSR1:
      return "SIGUSR1";
    default:
      return "a signal";
  }
}

}  // namespace hpctrain
