// Must compile: comm/ may include launch/, a layer below it. The control for probe_upward.cpp,
// so the upward failure cannot come from a broken probe set-up.
#include "launch/Mpi.hpp"

int hpctrain_probe_downward() {
  return 0;
}
