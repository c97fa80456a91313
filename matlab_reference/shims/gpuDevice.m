function d = gpuDevice(varargin)
% Octave stand-in for MATLAB's gpuDevice: no GPU; report nothing to reset or wait for.
d = struct('Name', 'octave-cpu', 'AvailableMemory', Inf);
end
