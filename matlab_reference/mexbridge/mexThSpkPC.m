function varargout = mexThSpkPC(varargin)
% Octave stand-in for Kilosort2's mexThSpkPC mex: pykilosort's kernel through mex_bridge.
varargout = cell(1, max(nargout, 1));
[varargout{:}] = mex_bridge('mexThSpkPC', nargout, varargin{:});
end
