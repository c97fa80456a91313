function x = gather(x)
% Octave stand-in for MATLAB's gather: arrays are already on the CPU.
end
