#pragma once
// RAII ownership of HDF5 identifiers and checked calls. HDF5's automatic error stack
// printing is switched off: failures become DataError (exit code 3) with a message that
// names the file and object, plus HDF5's innermost reason.
#include <hdf5.h>

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include <mpi.h>

namespace hpctrain {

class H5Id {
 public:
  H5Id() = default;
  explicit H5Id(hid_t id) : id_(id) {}
  H5Id(H5Id&& o) noexcept : id_(o.id_) { o.id_ = H5I_INVALID_HID; }
  H5Id& operator=(H5Id&& o) noexcept;
  H5Id(const H5Id&) = delete;
  H5Id& operator=(const H5Id&) = delete;
  ~H5Id() { reset(); }
  // Closes unchecked: for destructors and error paths, where a second error must not throw.
  void reset();
  // Closes checked, on the success path of a write: throws RuntimeFailure naming `context`
  // with HDF5's reason and the OS error when HDF5 reports a failure.
  void close(const std::string& context);
  hid_t get() const { return id_; }
  operator hid_t() const { return id_; }
  bool valid() const { return id_ >= 0; }

 private:
  hid_t id_ = H5I_INVALID_HID;
};

// Turns off HDF5's error printing for the whole process (call once at start-up).
void silence_hdf5_errors();
// The innermost message on HDF5's error stack (empty if none), then clears the stack.
std::string hdf5_error_reason();
// Throws `DataError(context + reason)` when `status` < 0.
hid_t h5_check(hid_t status, const std::string& context);
std::string hdf5_library_version();

// A file opened for reading. With a communicator it uses the MPI-IO driver (collective
// open and reads); without, the default driver.
class H5File {
 public:
  H5File() = default;
  static H5File open_read(const std::string& path, MPI_Comm comm);
  static H5File open_read_serial(const std::string& path);
  // Serial, truncates (tests; files use write_hdf5_atomically). `name`: what messages say ("": path).
  static H5File create(const std::string& path, const std::string& name = "");
  // A file held in memory (HDF5's core driver, nothing on disk); `name` is what messages
  // and path() say. image() gives its bytes.
  static H5File create_in_memory(const std::string& name);
  // The whole file as it would be on disk (flushed first); only for create_in_memory files.
  std::string image();
  // Flushes and closes, checked (RuntimeFailure naming the path and the OS error). A file
  // written must be closed with it: the destructor closes too, but cannot report a failed
  // final flush.
  void close();

  const std::string& path() const { return path_; }
  hid_t id() const { return file_.get(); }
  bool has(const std::string& object) const;
  bool collective() const { return collective_; }

  // Attributes on the root group or an object.
  std::string read_string_attr(const std::string& object, const std::string& name) const;
  bool has_attr(const std::string& object, const std::string& name) const;
  std::int64_t read_int_attr(const std::string& object, const std::string& name) const;
  std::vector<double> read_double_array_attr(const std::string& object, const std::string& name) const;
  void write_string_attr(const std::string& object, const std::string& name, const std::string& value);
  void write_int_attr(const std::string& object, const std::string& name, std::int64_t value);
  void write_double_array_attr(const std::string& object, const std::string& name, const std::vector<double>& v);
  void write_string_list(const std::string& dataset, const std::vector<std::string>& values);
  std::vector<std::string> read_string_list(const std::string& dataset) const;

 private:
  H5Id file_;
  std::string path_;
  bool collective_ = false;
};

// Writes an HDF5 file durably: `fill` writes into a file built in memory, whose bytes then
// go to disk through write_file_atomic (util/Files.hpp: temporary name, checked writes,
// fsync, rename, fsync of the folder). On any failure `path` keeps what it held, no
// temporary file stays, and the error names the file and the OS error.
//
// Why in memory: HDF5 (1.10 here) cannot recover from a failed close. When the disk fills
// during its final flush, H5Fclose fails, the file id stays open, and a second close or the
// library's clean-up at exit (MPI_Finalize) crashes in H5F__close_cb: measured with
// RLIMIT_FSIZE. Built in memory, HDF5 never meets the disk; our one checked write does.
// The cost is host memory of about twice the file while it is written.
void write_hdf5_atomically(const std::string& path, const std::function<void(H5File&)>& fill);

// An HDF5 file whose large datasets others fill in place (checkpoints written in parallel).
// HDF5 builds it in a private scratch file in RAM-backed /dev/shm (else TMPDIR), never at
// its destination: a failed write there would leave HDF5 unable to close the file (above),
// so the scratch folder's free space is checked first. reserve() gives a dataset space in
// the file without writing it (a hole in the scratch file); finish() closes the file,
// checked, and returns its length and every byte outside the reserved ranges (the structure
// and the small datasets), which the caller writes to the destination with checked
// positioned writes, as the owners of the reserved ranges write theirs. The scratch file is
// removed with the object.
class H5Skeleton {
 public:
  // `name`: what messages say; `structure_bytes`: about how large the structure and small
  // datasets will be (16 MiB more must be free).
  H5Skeleton(const std::string& name, std::int64_t structure_bytes);
  ~H5Skeleton();
  H5Skeleton(const H5Skeleton&) = delete;
  H5Skeleton& operator=(const H5Skeleton&) = delete;
  H5File& file() { return file_; }
  // Creates dataset `name` (contiguous, space allocated now, never filled; intermediate
  // groups created) and returns the byte offset of its data in the file.
  std::int64_t reserve(const std::string& name, hid_t file_type, const std::vector<std::int64_t>& shape);
  struct Image {
    std::int64_t size = 0;
    std::vector<std::pair<std::int64_t, std::string>> pieces;  // offset, bytes
  };
  Image finish();

 private:
  int fd_ = -1;
  std::string name_;
  std::string path_;
  H5File file_;
  std::vector<std::pair<std::int64_t, std::int64_t>> reserved_;  // offset, bytes
};

struct DatasetInfo {
  std::vector<std::int64_t> shape;
  std::string dtype;  // "uint8", "int32", "float32", ...
  std::size_t element_size = 0;
};

DatasetInfo dataset_info(const H5File& file, const std::string& name);

// Selects elements [begin, end) in C order of `space` (a dataset of `shape`): a union of at
// most 2 x rank - 1 hyperslabs, which HDF5 visits in C order, so a 1-D memory space of
// end - begin elements reads or writes them in order. Throws DataError naming `context`.
void select_c_order_range(hid_t space, const std::vector<std::int64_t>& shape, std::int64_t begin, std::int64_t end,
                          const std::string& context);

// Reads rows [row_begin, row_begin + rows) of dataset `name` (first dimension) into `out`,
// which must hold rows * row_elements elements of `mem_type`. Collective when the file
// was opened with a communicator: every rank of it must call, possibly with rows == 0.
void read_rows(const H5File& file, const std::string& name, std::int64_t row_begin, std::int64_t rows, hid_t mem_type,
               void* out);

}  // namespace hpctrain
