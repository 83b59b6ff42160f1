#include <gtest/gtest.h>
#include <unistd.h>

#include <cstdio>
#include <cstring>
#include <numeric>
#include <string>
#include <vector>

#include "io/Hdf5.hpp"
#include "util/Files.hpp"

using namespace hpctrain;

namespace {

std::string temp_name(const std::string& what) {
  return "/tmp/hpctrain_skeleton_" + std::to_string(getpid()) + "_" + what + ".h5";
}

// Elements [begin, end) in C order of a float dataset of `shape`, through select_c_order_range.
std::vector<float> read_range(const H5File& f, const std::string& name, const std::vector<std::int64_t>& shape,
                              std::int64_t begin, std::int64_t end) {
  H5Id ds(h5_check(H5Dopen2(f.id(), name.c_str(), H5P_DEFAULT), name));
  H5Id space(h5_check(H5Dget_space(ds), name));
  select_c_order_range(space, shape, begin, end, name);
  EXPECT_EQ(H5Sget_select_npoints(space), end - begin);
  std::vector<float> out(static_cast<std::size_t>(end - begin));
  const hsize_t n = out.size();
  H5Id memory(h5_check(H5Screate_simple(1, &n, nullptr), name));
  if (n > 0) h5_check(H5Dread(ds, H5T_NATIVE_FLOAT, memory, space, H5P_DEFAULT, out.data()), name);
  return out;
}

}  // namespace

TEST(SelectCOrderRange, EveryRangeOfThreeShapesReadsInOrder) {
  const std::string path = temp_name("ranges");
  const std::vector<std::vector<std::int64_t>> shapes{{7}, {3, 5}, {2, 3, 4}, {2, 1, 3, 2}};
  {
    H5File f = H5File::create(path);
    for (std::size_t s = 0; s < shapes.size(); ++s) {
      std::vector<hsize_t> dims(shapes[s].begin(), shapes[s].end());
      const auto n = std::accumulate(shapes[s].begin(), shapes[s].end(), std::int64_t{1}, std::multiplies<>());
      std::vector<float> values(static_cast<std::size_t>(n));
      std::iota(values.begin(), values.end(), 0.0f);
      H5Id space(H5Screate_simple(static_cast<int>(dims.size()), dims.data(), nullptr));
      const std::string name = "/d" + std::to_string(s);
      H5Id ds(H5Dcreate2(f.id(), name.c_str(), H5T_IEEE_F32LE, space, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT));
      ASSERT_GE(H5Dwrite(ds, H5T_NATIVE_FLOAT, H5S_ALL, H5S_ALL, H5P_DEFAULT, values.data()), 0);
    }
    f.close();
  }
  H5File f = H5File::open_read_serial(path);
  for (std::size_t s = 0; s < shapes.size(); ++s) {
    const auto n = std::accumulate(shapes[s].begin(), shapes[s].end(), std::int64_t{1}, std::multiplies<>());
    for (std::int64_t begin = 0; begin <= n; ++begin) {
      for (std::int64_t end = begin; end <= n; ++end) {
        const auto got = read_range(f, "/d" + std::to_string(s), shapes[s], begin, end);
        std::vector<float> want(static_cast<std::size_t>(end - begin));
        std::iota(want.begin(), want.end(), static_cast<float>(begin));
        ASSERT_EQ(got, want) << "shape " << s << " range [" << begin << ", " << end << ")";
      }
    }
  }
  std::remove(path.c_str());
}

TEST(H5Skeleton, ReservedRangesFilledByPositionedWritesReadBack) {
  const std::string path = temp_name("skeleton");
  std::vector<float> big(1000);
  std::iota(big.begin(), big.end(), 0.5f);
  std::vector<std::int64_t> offsets;
  H5Skeleton::Image image;
  {
    H5Skeleton skeleton(path, 0);
    H5File& f = skeleton.file();
    offsets.push_back(skeleton.reserve("/a/big", H5T_IEEE_F32LE, {10, 100}));
    f.write_string_attr("/", "note", "small things after the reserved data");
    offsets.push_back(skeleton.reserve("/b", H5T_IEEE_F32LE, {3}));
    f.write_string_list("/names", {"x", "y"});
    image = skeleton.finish();
  }
  // The structure excludes the reserved bytes; the owners write them in any order.
  std::int64_t structure = 0;
  for (const auto& [offset, bytes] : image.pieces) {
    structure += static_cast<std::int64_t>(bytes.size());
    for (const auto reserved : offsets)
      EXPECT_FALSE(offset <= reserved && reserved < offset + (std::int64_t)bytes.size());
  }
  EXPECT_EQ(structure + 4000 + 12, image.size);
  std::vector<FilePiece> pieces;
  for (const auto& [offset, bytes] : image.pieces) pieces.push_back({offset, bytes});
  write_pieces(path, pieces, image.size);
  const float three[3] = {7, 8, 9};
  write_pieces(path, {{offsets[1], std::string_view(reinterpret_cast<const char*>(three), 12)},
                      {offsets[0] + 2000, std::string_view(reinterpret_cast<const char*>(big.data() + 500), 2000)},
                      {offsets[0], std::string_view(reinterpret_cast<const char*>(big.data()), 2000)}});
  EXPECT_EQ(read_piece(path, offsets[1], 12), std::string(reinterpret_cast<const char*>(three), 12));
  H5File f = H5File::open_read_serial(path);
  EXPECT_EQ(read_range(f, "/a/big", {10, 100}, 0, 1000), big);
  EXPECT_EQ(read_range(f, "/b", {3}, 0, 3), std::vector<float>({7, 8, 9}));
  EXPECT_EQ(f.read_string_attr("/", "note"), "small things after the reserved data");
  EXPECT_EQ(f.read_string_list("/names"), std::vector<std::string>({"x", "y"}));
  std::remove(path.c_str());
}
