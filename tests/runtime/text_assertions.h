// Substring assertions for error messages (gmock, which has HasSubstr, is not linked into the
// tests): EXPECT_TRUE(Contains(status.message(), "element 0")).
#pragma once

#include <string>

#include <gtest/gtest.h>

namespace hetsynth::testing_util {

inline ::testing::AssertionResult Contains(const std::string& text, const std::string& part) {
  if (text.find(part) != std::string::npos) return ::testing::AssertionSuccess();
  return ::testing::AssertionFailure() << "\"" << text << "\"\n  does not contain \"" << part << "\"";
}

}  // namespace hetsynth::testing_util
