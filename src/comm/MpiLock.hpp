#pragma once
// The lock that serializes MPI calls made while another thread may call MPI too (the
// gradient reducer's thread, the stall watchdog's puts). comm/ only.
#include <mutex>

namespace hpctrain {

std::mutex& nonblocking_mutex();

}  // namespace hpctrain
