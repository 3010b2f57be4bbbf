// What every kernel primitive's eval_cpu does before it dispatches its work.

#pragma once

#include <vector>

#include "mlx/backend/cpu/encoder.h"
#include "mlx/primitives.h"

namespace locomlx_kernels {

// Allocates the outputs and registers them and the inputs with the stream's command encoder (which keeps them
// alive until the dispatched work has run); returns that encoder.
inline mlx::core::cpu::CommandEncoder& prepared_encoder(mlx::core::Stream stream,
                                                        const std::vector<mlx::core::array>& inputs,
                                                        std::vector<mlx::core::array>& outputs) {
  auto& encoder = mlx::core::cpu::get_command_encoder(stream);
  for (auto& input : inputs) encoder.set_input_array(input);
  for (auto& out : outputs) {
    out.set_data(mlx::core::allocator::malloc(out.nbytes()));
    encoder.set_output_array(out);
  }
  return encoder;
}

// The same for a primitive of one output.
inline mlx::core::cpu::CommandEncoder& prepared_encoder(mlx::core::Stream stream,
                                                        const std::vector<mlx::core::array>& inputs,
                                                        mlx::core::array& out) {
  auto& encoder = mlx::core::cpu::get_command_encoder(stream);
  for (auto& input : inputs) encoder.set_input_array(input);
  out.set_data(mlx::core::allocator::malloc(out.nbytes()));
  encoder.set_output_array(out);
  return encoder;
}

}  // namespace locomlx_kernels
