#pragma once
// Preemption signals: SIGTERM (a batch system ending the job) and SIGUSR1 (Slurm's
// --signal=USR1@SECONDS warning) are recorded, not acted on, so the ranks can agree at
// the next step boundary and write a checkpoint before they exit (docs/checkpoints.md).
namespace hpctrain {

// Exit code of a run that stopped for a preemption signal after writing its checkpoint
// (EX_TEMPFAIL: try again). The slurm/ scripts requeue on it.
inline constexpr int kPreemptedExitCode = 75;

// Installs the handlers (idempotent). Until then the signals keep their default action.
void install_preemption_handlers();
// The signal received since installation (0: none).
int preemption_signal();
const char* signal_name(int signal);

}  // namespace hpctrain
