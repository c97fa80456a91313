function varargout = spikedetector3(varargin)
% Octave stand-in for Kilosort 2.5's spikedetector3 mex: pykilosort's detect_generic_spikes
% through mex_bridge (answered by mex_bridge.py's spikedetector3).
varargout = cell(1, max(nargout, 1));
[varargout{:}] = mex_bridge('spikedetector3', nargout, varargin{:});
end
