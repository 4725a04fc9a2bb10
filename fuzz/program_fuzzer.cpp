// libFuzzer entry point of the 'program' target (fuzz/fuzz_targets.h).
#include <cstddef>
#include <cstdint>
#include <string_view>

#include "fuzz/fuzz_targets.h"

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  isoguard::fuzz::SetDataDir(ISOGUARD_SOURCE_DIR);
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  return isoguard::fuzz::FuzzProgram(std::string_view(reinterpret_cast<const char*>(data), size));
}
